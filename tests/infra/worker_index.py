"""Run by tests/infra/test_worker_index.py inside .venv-worker (Python 3.13): index a function_app.py the way the
real Python worker does (azure-functions-runtime: load the binding registry, index the app, validate and register
each function, build its metadata) and print every function's raw bindings as the host receives them, or the
worker's error. Not imported by anything else: it runs in another interpreter."""

import json
import sys
import types

# The worker's protobuf messages come from the host's proxy worker, which is not on PyPI. Indexing only reads
# these two enums of FunctionRpc.proto (BindingInfo.Direction, BindingInfo.DataType) and stores the metadata.


class _BindingInfo:
    out, inout = 1, 2
    undefined, string, binary, stream = 0, 1, 2, 3

    def __init__(self, **fields: object) -> None:
        self.__dict__.update(fields)


setattr(_BindingInfo, "in", 0)


class _Message:
    def __init__(self, **fields: object) -> None:
        self.__dict__.update(fields)


def main() -> None:
    app_dir, app_file = sys.argv[1], sys.argv[2]
    sys.path.insert(0, app_dir)
    from azure_functions_runtime.bindings.meta import load_binding_registry
    from azure_functions_runtime.functions import Registry
    from azure_functions_runtime.loader import index_function_app, process_indexed_function

    protos = types.SimpleNamespace(BindingInfo=_BindingInfo, RpcFunctionMetadata=_Message, RpcRetryOptions=_Message)
    load_binding_registry()
    try:
        functions = index_function_app(app_file)
        metadata, _ = process_indexed_function(protos, Registry(), functions, app_dir)
    except Exception as exc:  # what the worker reports to the host: the function does not load
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return
    print(
        json.dumps({m.name: sorted((json.loads(b) for b in m.raw_bindings), key=lambda b: b["name"]) for m in metadata})
    )


if __name__ == "__main__":
    main()
