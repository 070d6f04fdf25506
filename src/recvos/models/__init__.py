"""recvos.models"""
