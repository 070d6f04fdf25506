"""recvos.inference"""
