"""Call an HTTP API with an access token from tokenbroker (standard library only)."""
import http.client
import json
import os
import socket
import urllib.request


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the broker's Unix socket."""

    def __init__(self, socket_path, timeout=15):
        super().__init__("tokenbroker", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def token(name):
    """Return credential name's access token; raise with the broker's advice."""
    conn = UnixHTTPConnection(os.environ.get("TOKENBROKER_SOCKET", "/run/tokenbroker/tokenbroker.sock"))
    try:
        conn.request("GET", "/v1/tokens/" + name, headers={"X-Tokenbroker": "1"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError("tokenbroker: %s: %s" % (answer["error"], answer["error_description"]))
    return answer["access_token"]


req = urllib.request.Request(
    "https://api.firework.com/api/v1/videos/123",
    headers={"Authorization": "Bearer " + token("firework")},
)
with urllib.request.urlopen(req, timeout=30) as resp:
    print(resp.status, resp.read().decode())
