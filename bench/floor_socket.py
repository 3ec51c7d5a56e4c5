"""The Python floor for cold starts: a Runtime API loop on the builtin `_socket` module and nothing else.

`python bench/floor_socket.py module.function` imports the handler and answers every event with what it returns
for the raw event bytes (the cold-start handlers echo them). No JSON, no context, no logging, no `socket` module
(which imports `selectors` and `enum`): what is left is the interpreter's own start-up, the handler's imports and
one TCP connection, the least any Python runtime can cost.
"""

import _socket
import os  # already imported by the interpreter's start-up: free
import sys

PREFIX = b"/2018-06-01/runtime/invocation/"


def read_response(sock: "_socket.socket", buffer: bytearray) -> "tuple[int, dict[bytes, bytes], bytes]":
    """One HTTP response: status, lower-cased headers and body; bytes read past it stay in `buffer`."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        data = sock.recv(65536)
        if not data:
            sys.exit(0)  # the emulator closed the connection: it is shutting down
        buffer += data
    lines = bytes(buffer[:end]).split(b"\r\n")
    del buffer[: end + 4]
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    while len(buffer) < length:
        data = sock.recv(max(65536, length - len(buffer)))
        if not data:
            sys.exit(0)
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def main() -> None:
    address = os.environ["AWS_LAMBDA_RUNTIME_API"]
    root = os.environ.get("LAMBDA_TASK_ROOT")
    if root:
        sys.path.insert(0, root)
    module_name, _, function_name = sys.argv[1].rpartition(".")
    module_name = module_name.replace("/", ".")
    __import__(module_name)
    handler = getattr(sys.modules[module_name], function_name)

    host, _, port = address.rpartition(":")
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    sock.connect((host, int(port)))
    host_header = address.encode()
    next_request = b"GET " + PREFIX + b"next HTTP/1.1\r\nHost: " + host_header + b"\r\n\r\n"
    buffer = bytearray()
    while True:
        sock.sendall(next_request)
        status, headers, event = read_response(sock, buffer)
        if status != 200:
            sys.exit(f"floor_socket: /next answered HTTP {status}")
        result = handler(event, None)
        head = (
            b"POST %s%s/response HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        )
        sock.sendall(head % (PREFIX, headers[b"lambda-runtime-aws-request-id"], host_header, len(result)) + result)
        status, _, _ = read_response(sock, buffer)
        if status != 202:
            sys.exit(f"floor_socket: the response was answered HTTP {status}")


if __name__ == "__main__":
    main()
