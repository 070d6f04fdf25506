"""recvos.evaluation"""
