// Package etcdtest runs a real etcd (Debian's etcd-server) for tests: one
// member or several, on loopback, with mutual TLS from a certificate
// authority the test makes with crypto/x509. It owns the test's PKI and
// the etcd processes, and removes both when the test ends.
package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// TB is what etcdtest needs of its caller: a test (testing.TB has it) or
// a tool such as the benchmark, with an adapter.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	TempDir() string
	Cleanup(func())
	Failed() bool
}

// PKI is a test certificate authority and the files it wrote.
type PKI struct {
	Dir    string
	CAFile string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// NewPKI makes a CA in dir.
func NewPKI(t TB, dir string) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "labvm test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"), ca: ca, caKey: key}
	writePEM(t, p.CAFile, "CERTIFICATE", der)
	return p
}

// Issue writes NAME.crt and NAME.key: a certificate for both server and
// client use, valid for 127.0.0.1 and localhost. It returns their paths.
func (p *PKI) Issue(t TB, name string, extraIPs ...net.IP) (certFile, keyFile string) {
	t.Helper()
	return p.issueBy(t, name, p.ca, p.caKey, extraIPs...)
}

// IssueForeign writes a certificate of another, unknown CA: etcd must
// refuse it.
func (p *PKI) IssueForeign(t TB, name string) (certFile, keyFile string) {
	t.Helper()
	other := NewPKI(t, t.TempDir())
	return p.issueBy(t, name, other.ca, other.caKey)
}

func (p *PKI) issueBy(t TB, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, extraIPs ...net.IP) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1)}, extraIPs...),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(p.Dir, name+".crt"), filepath.Join(p.Dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

func serial(t TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Cluster is a running etcd cluster of one or more members.
type Cluster struct {
	t       TB
	PKI     *PKI
	Members []*Member
	client  *http.Client
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	peerURL   string
	dir       string
	args      []string
	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	logs      *lockedBuffer
}

// Start runs an etcd cluster of n members on loopback, clients and peers
// both with mutual TLS, and waits until it has a leader.
func Start(t TB, n int) *Cluster {
	t.Helper()
	return StartOn(t, n, net.IPv4(127, 0, 0, 1))
}

// StartOn is Start with the members listening on ip (an address of this
// host other hosts or network namespaces reach).
func StartOn(t TB, n int, ip net.IP) *Cluster {
	t.Helper()
	var etcd string
	if tb, ok := t.(testing.TB); ok {
		etcd = hostreq.RequireTool(tb, "etcd", "etcd-server")
	} else if p, err := exec.LookPath("etcd"); err == nil {
		etcd = p
	} else {
		t.Fatalf("etcd not in PATH (apt-get install etcd-server)")
	}
	dir := t.TempDir()
	c := &Cluster{t: t, PKI: NewPKI(t, dir)}
	cert, key := c.PKI.Issue(t, "etcd", ip)
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{Name: fmt.Sprintf("m%d", i), dir: filepath.Join(dir, fmt.Sprintf("m%d", i)), logs: &lockedBuffer{}}
		m.ClientURL = "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(freePort(t, ip)))
		m.peerURL = "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(freePort(t, ip)))
		initial = append(initial, m.Name+"="+m.peerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = []string{etcd,
			"--name", m.Name, "--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(dir),
			"--cert-file", cert, "--key-file", key, "--trusted-ca-file", c.PKI.CAFile, "--client-cert-auth",
			"--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", c.PKI.CAFile, "--peer-client-cert-auth",
			"--heartbeat-interval", "50", "--election-timeout", "500",
		}
		m.start(t)
	}
	c.client = c.httpClient(t)
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
			if t.Failed() {
				t.Logf("etcd %s log (last 3000 bytes):\n%s", m.Name, m.logs.tail(3000))
			}
		}
	})
	c.WaitHealthy(t, 30*time.Second)
	return c
}

// httpClient reaches the members' /health with a client certificate.
func (c *Cluster) httpClient(t TB) *http.Client {
	cert, key := c.PKI.Issue(t, "health")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.PKI.ca)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	}}
}

// WaitHealthy waits until a running member reports the cluster healthy
// (it has a leader and a quorum).
func (c *Cluster) WaitHealthy(t TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, m := range c.Members {
			resp, err := c.client.Get(m.ClientURL + "/health")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return
			}
		}
		if time.Now().After(deadline) {
			for _, m := range c.Members {
				t.Logf("etcd %s log:\n%s", m.Name, m.logs.tail(3000))
			}
			t.Fatalf("etcd not healthy after %v", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

func (m *Member) start(t TB) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Stdout, cmd.Stderr = m.logs, m.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(m.exited)
}

// Kill stops the member at once (SIGKILL): a crash, or a machine gone.
func (m *Member) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Restart starts a killed member again on its data dir.
func (m *Member) Restart(t TB) {
	t.Helper()
	m.start(t)
}

func freePort(t TB, ip net.IP) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) > n {
		return string(l.b[len(l.b)-n:])
	}
	return string(l.b)
}
