package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// clientTLS is the TLS configuration this daemon's calls to the scheduler use: verified against
// --tls-ca when given; else the certificate is not verified (the cluster token still guards every
// call, but a man in the middle could read it), said once in the log.
func clientTLS(c Config, log *slog.Logger) (*tls.Config, error) {
	if c.TLSCA == "" {
		if c.TLSCert != "" || strings.HasPrefix(c.Join, "https://") {
			log.Warn("cluster TLS: the scheduler's certificate is NOT verified; give --tls-ca to verify it")
		}
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil //nolint:gosec // warned above
	}
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("cluster: --tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster: --tls-ca %s: no PEM certificate in it", c.TLSCA)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// serverTLS is the TLS configuration of the cluster listener: this node's certificate.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}
