package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/sched"
)

// testCA makes a self-signed CA and a server certificate it signs for ips; it writes ca.pem,
// cert.pem and key.pem in dir and returns the CA's pool.
func testCA(t *testing.T, dir string, ips ...string) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "eddy test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "eddy scheduler"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("cert.pem", "CERTIFICATE", der)
	write("key.pem", "EC PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

// A scheduler serving TLS with a certificate from the test's own CA; a node joins over https://
// verifying it with --tls-ca; a task goes through the joined node and completes there. Plain
// HTTP to the TLS port, a client that does not trust the CA, and a call without the token fail.
func TestClusterOverTLS(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	openPath(t, base)
	origin := filepath.Join(base, "tls-origin")
	if err := os.MkdirAll(origin, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(origin, 0o777)
	pool := testCA(t, base, "127.0.0.21")
	ca, cert, key := filepath.Join(base, "ca.pem"), filepath.Join(base, "cert.pem"), filepath.Join(base, "key.pem")
	token := filepath.Join(base, "tls-token")
	os.WriteFile(token, []byte("tls-secret\n"), 0o600)

	addr0, addr1 := freeAddr(t, "127.0.0.21"), freeAddr(t, "127.0.0.22")
	n0 := newNodeAt(t, filepath.Join(base, "tls-n0"), origin)
	n0.start("--node-name", "tls0", "--listen", addr0, "--token-file", token, "--scheduler",
		"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)
	n1 := newNodeAt(t, filepath.Join(base, "tls-n1"), origin)
	n1.start("--node-name", "tls1", "--listen", addr1, "--token-file", token, "--join", "https://"+addr0, "--tls-ca", ca)

	ctx := context.Background()
	cl := api.NewTCP("https://"+addr0, api.WithToken("tls-secret"), api.WithTLS(&tls.Config{RootCAs: pool}), api.WithTimeout(10*time.Second))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ns []sched.NodeStatus
		err := cl.Do(ctx, "GET", "/v1/nodes", nil, &ns)
		if err == nil && len(ns) == 2 && ns[0].Up && ns[1].Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two nodes up over TLS: %v %+v\n--- scheduler ---\n%s\n--- node ---\n%s", err, ns, n0.tail(40), n1.tail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, n := range []*node{n0, n1} {
		if log := n.tail(200); strings.Contains(log, "NOT verified") {
			t.Fatalf("a daemon with --tls-ca warns that the certificate is not verified:\n%s", log)
		}
	}

	// A task submitted through the joined node (forwarded over TLS), run there (its agent talks
	// TLS too).
	out, err := n1.eddy("submit", "--json", "--wait", "--uid", "65534", "--gid", "65534", "--node", "tls1", "--mem", "64M", "--",
		"/bin/sh", "-c", "echo over-tls")
	if err != nil {
		t.Fatalf("submit over TLS: %v %s\n--- node ---\n%s", err, out, n1.tail(40))
	}
	if !strings.Contains(out, `"state": "completed"`) && !strings.Contains(out, `"state":"completed"`) {
		t.Fatalf("task over TLS: %s", out)
	}
	// The CLI verifies the scheduler with --client-tls-ca.
	if out, err := n1.eddy("--addr", "https://"+addr0, "--token", "tls-secret", "--client-tls-ca", ca, "nodes"); err != nil || !strings.Contains(out, "tls1") {
		t.Fatalf("CLI over TLS: %v %s", err, out)
	}

	// Plain HTTP to the TLS port fails.
	req, _ := http.NewRequest("GET", "http://"+addr0+"/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer tls-secret")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Fatalf("plain HTTP to the TLS port answered %d", resp.StatusCode)
		}
	}
	// A client that does not trust the CA fails on the certificate.
	untrusting := api.NewTCP("https://"+addr0, api.WithToken("tls-secret"), api.WithTLS(&tls.Config{RootCAs: x509.NewCertPool()}), api.WithTimeout(10*time.Second))
	var uerr *tls.CertificateVerificationError
	if err := untrusting.Do(ctx, "GET", "/v1/nodes", nil, nil); !errors.As(err, &uerr) {
		t.Fatalf("a client without the CA: err = %v, want a certificate verification error", err)
	}
	// No token: refused.
	anon := api.NewTCP("https://"+addr0, api.WithTLS(&tls.Config{RootCAs: pool}), api.WithTimeout(10*time.Second))
	var ae *api.Error
	if err := anon.Do(ctx, "GET", "/v1/nodes", nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("no token over TLS: %v", err)
	}
}
