"""recvos.training"""
