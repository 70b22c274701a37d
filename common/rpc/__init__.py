"""Stage 4: the gRPC TaskService, its provider, its ZooKeeper registry and the client proxy.

The contract is proto/tasklab/v1/task_service.proto; the Python code generated from it lives in
`common.rpc.gen` (built by `python -m common.rpc.codegen`, never edited). This package file
imports nothing, so the code generator can run before there is generated code.
"""
