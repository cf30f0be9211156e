"""TLS: ctd serves XML-RPC over https with a PEM certificate and key; plain http to that port does not work."""

from __future__ import annotations

import http.client
import socket
import ssl
import xmlrpc.client

import pytest

from ctdtest import ct_insert, run, wait_for


@pytest.fixture
def cert(tmp_path):
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)])
    key.chmod(0o600)
    return crt, key


def test_tls_loginAndViewOverHTTPS_withTrustedCertificate(ctd, cert):
    crt, key = cert
    e = ct_insert("tcp", "10.11.0.1", "10.11.0.2", 1234, 443, state="ESTABLISHED", mark=9)
    c = ctd(tls_cert=crt, tls_key=key)
    assert c.url.startswith("https://127.0.0.1:")
    rpc, sid = c.login()
    v = rpc.view(sid, {"orig_src": "10.11.0.0/16"}, "", "ASC", 0, 10)
    assert v["total"] == 1
    conn = v["connections"][0]
    assert conn["id"] == str(e["id"]) and conn["state"] == "ESTABLISHED" and conn["mark"] == 9
    assert rpc.kill(sid, [conn["id"]])["killed"] == 1
    # The certificate is the one presented.
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as raw:
        with c.ssl_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            presented = tls.getpeercert(binary_form=True)
    assert ssl.DER_cert_to_PEM_cert(presented).strip() == crt.read_text().strip()


def test_tls_withUntrustedContext_handshakeRejected(ctd, cert):
    crt, key = cert
    c = ctd(tls_cert=crt, tls_key=key)
    untrusted = ssl.create_default_context()  # system CAs only: the self-signed certificate is not trusted
    rpc = xmlrpc.client.ServerProxy(c.url, context=untrusted)
    with pytest.raises(ssl.SSLCertVerificationError):
        rpc.system.listMethods()
    rpc2, sid = c.login()
    assert rpc2.status(sid)["version"]


def test_tls_plainHTTPToTLSPort_fails(ctd, cert):
    crt, key = cert
    c = ctd(tls_cert=crt, tls_key=key)
    plain = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{c.port}/RPC2")
    with pytest.raises((OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)):
        plain.login("admin", c.password)
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
    try:
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("POST", "/RPC2", body=b"<methodCall><methodName>system.listMethods</methodName>"
                                                b"</methodCall>", headers={"Content-Type": "text/xml"})
            r = conn.getresponse()
            r.read()
    finally:
        conn.close()
    # The daemon is unharmed and still serves TLS clients.
    assert c.proc.poll() is None
    rpc, sid = c.login()
    wait_for(lambda: rpc.status(sid)["version"], timeout=2)
