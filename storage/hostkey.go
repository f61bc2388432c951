package storage

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// SSHHostKey is a guest's SSH host key pair. The daemon makes it at
// create and hands the private half to the guest in the seed, so the
// public half is known before the first login and ssh can pin it instead
// of trusting whatever key the guest presents first.
type SSHHostKey struct {
	// Private is the private key in OpenSSH's format ("-----BEGIN
	// OPENSSH PRIVATE KEY-----"), what cloud-init writes to
	// /etc/ssh/ssh_host_ed25519_key.
	Private []byte
	// Public is the public key as one authorized_keys line without a
	// comment ("ssh-ed25519 AAAA…"), what known_hosts records.
	Public string
}

// NewSSHHostKey makes a fresh ed25519 host key pair.
func NewSSHHostKey() (SSHHostKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SSHHostKey{}, fmt.Errorf("generate SSH host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return SSHHostKey{}, fmt.Errorf("encode SSH host key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return SSHHostKey{}, fmt.Errorf("encode SSH host public key: %w", err)
	}
	return SSHHostKey{
		Private: pem.EncodeToMemory(block),
		Public:  strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))),
	}, nil
}

// Validate checks that the pair is an ed25519 key in the formats above
// and that both halves belong together, so a seed never installs a key
// other than the one recorded for pinning.
func (k SSHHostKey) Validate() error {
	if !bytes.HasPrefix(bytes.TrimSpace(k.Private), []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
		return errors.New("SSH host private key: want OpenSSH's private key format")
	}
	raw, err := ssh.ParseRawPrivateKey(k.Private)
	if err != nil {
		return fmt.Errorf("SSH host private key: %w", err)
	}
	priv, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return fmt.Errorf("SSH host private key: %T, want ed25519", raw)
	}
	if strings.ContainsAny(k.Public, "\r\n") {
		return errors.New("SSH host public key spans several lines")
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Public))
	if err != nil {
		return fmt.Errorf("SSH host public key: %w", err)
	}
	want, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return fmt.Errorf("SSH host private key: %w", err)
	}
	if !bytes.Equal(pub.Marshal(), want.Marshal()) {
		return errors.New("SSH host public key does not belong to the private key")
	}
	return nil
}
