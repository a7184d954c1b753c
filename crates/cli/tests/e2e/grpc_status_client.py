"""A gRPC client in another language, as a client team would write one: calls each case's
method with its request bytes and prints the status it got, decoding the google.rpc details
(ErrorInfo, BadRequest, RetryInfo) with grpcio-status, one JSON object per line.

Input (stdin): {"target": "127.0.0.1:port", "cases": [{"method": "/pkg.Service/Rpc",
"request_hex": "..."}]}; each case may name its own "target".
"""

import json
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def call(target, method, request):
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(method)
        try:
            stub(request, timeout=30)
            return {"code": "OK"}
        except grpc.RpcError as error:
            answer = {"code": error.code().name, "message": error.details()}
            status = rpc_status.from_call(error)
            if status is None:
                return answer
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    answer["reason"] = info.reason
                    answer["domain"] = info.domain
                    answer["metadata"] = dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    answer["fields"] = [v.field for v in bad.field_violations]
                elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    detail.Unpack(retry)
                    answer["retry_delay_ms"] = retry.retry_delay.ToMilliseconds()
            return answer


def main():
    job = json.load(sys.stdin)
    for case in job["cases"]:
        target = case.get("target", job.get("target"))
        answer = call(target, case["method"], bytes.fromhex(case["request_hex"]))
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
