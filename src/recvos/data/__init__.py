"""recvos.data"""
