package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"time"
)

// Config is the `cluster:` section of labvmd.yaml.
type Config struct {
	// Name is the cluster's; every key lives under /labvm/<Name>/.
	Name string
	// Host is this host's name in the cluster (unique in it).
	Host string
	// Endpoints are etcd's client URLs, https only.
	Endpoints []string
	// CA verifies etcd's certificate; Cert and Key are this labvmd's
	// client certificate. Whoever holds a certificate etcd accepts can
	// write the cluster's state: see ARCHITECTURE.md.
	CA, Cert, Key string
	// TTL is the liveness lease: a host not heard from for this long is
	// lost. 10 s by default.
	TTL time.Duration
	// SSH is how users reach this host for `labvm --host`, published so
	// a create placed here can be sent here: ssh://HOST by default.
	SSH string
	// Socket is this labvmd's API socket on this host, published with SSH.
	Socket string
	// Version is labvmd's, published with the host.
	Version string
}

func (c Config) sshURL() string {
	if c.SSH != "" {
		return c.SSH
	}
	return "ssh://" + c.Host
}

// DefaultTTL is the liveness lease's time to live.
const DefaultTTL = 10 * time.Second

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case !nameRE.MatchString(c.Name):
		return fmt.Errorf("cluster name %q: use 1-63 of a-z, 0-9, '.' and '-'", c.Name)
	case !nameRE.MatchString(c.Host):
		return fmt.Errorf("cluster host %q: use 1-63 of a-z, 0-9, '.' and '-' (this host's name in the cluster)", c.Host)
	case len(c.Endpoints) == 0:
		return errors.New("cluster: no etcd endpoints")
	case c.CA == "" || c.Cert == "" || c.Key == "":
		return errors.New("cluster: ca, cert and key are required: labvmd talks to etcd only with mutual TLS")
	case c.TTL < 0 || (c.TTL > 0 && c.TTL < 2*time.Second):
		return fmt.Errorf("cluster lease TTL %v: at least 2s", c.TTL)
	}
	if c.SSH != "" {
		if u, err := url.Parse(c.SSH); err != nil || u.Scheme != "ssh" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("cluster ssh %q: want ssh://[USER@]HOST[:PORT], how users reach this host", c.SSH)
		}
	}
	for _, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("cluster etcd endpoint %q: want https://HOST:PORT (plain http is refused)", e)
		}
	}
	return nil
}

func (c Config) ttl() time.Duration {
	if c.TTL == 0 {
		return DefaultTTL
	}
	return c.TTL
}

// tlsConfig is the client side of mutual TLS with etcd.
func (c Config) tlsConfig() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster client certificate: %w", err)
	}
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster CA %s holds no PEM certificate", c.CA)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}
