"""recvos.cli"""
