package vm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Instance is the persisted record of one compute instance: everything the
// daemon needs to rebuild its domain, disk and seed after a restart. It is
// the desired state; libvirt and the filesystem are reconciled against it.
type Instance struct {
	ID   string `json:"id"`
	Name string `json:"name"`

	Size        Size   `json:"size"`
	Image       string `json:"image"`
	ImageDigest string `json:"image_digest"`
	DiskSize    int64  `json:"disk_size"`

	GuestUser         string   `json:"guest_user,omitempty"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`

	VNet    string     `json:"vnet"`
	Subnet  string     `json:"subnet"`
	Bridge  string     `json:"bridge"`
	IP      netip.Addr `json:"ip"`
	Prefix  int        `json:"prefix"`
	Gateway netip.Addr `json:"gateway"`
	MAC     string     `json:"mac"`
	// DNS are the resolvers the guest is told about.
	DNS []netip.Addr `json:"dns,omitempty"`

	Scripts InstanceScripts `json:"scripts"`

	// Datasets are the host directories (by dataset name) shared with the
	// guest read-only at DatasetMountPoint; fixed at create, like the size.
	Datasets []string `json:"datasets,omitempty"`

	// NoAutostart keeps the instance stopped after a host restart; by
	// default an instance that was running starts again.
	NoAutostart bool `json:"no_autostart,omitempty"`
	// RestartPending marks an instance stopped by a host shutdown (or
	// found dead at daemon start) that the next daemon start brings back.
	RestartPending bool `json:"restart_pending,omitempty"`

	Creator    string `json:"creator"`
	AssignedTo string `json:"assigned_to,omitempty"`
	// CreatorUID and AssignedUID are the accounts' uids when the record
	// was made, so a deleted and re-created account with the same name is
	// not taken for the old one. Records older than this have none.
	CreatorUID *int `json:"creator_uid,omitempty"`
	// SSHHostKeys are the public halves (authorized_keys format) of the
	// host keys labvmd made for the guest and handed it in the seed, so
	// `labvm ssh` knows the key before the first login. The private
	// halves live only in the seed.
	SSHHostKeys []string `json:"ssh_host_keys,omitempty"`
	AssignedUID *int     `json:"assigned_uid,omitempty"`

	State       State     `json:"state"`
	StateReason string    `json:"state_reason,omitempty"`
	Domain      string    `json:"domain"`
	Accel       Accel     `json:"accel"`
	Host        string    `json:"host"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`

	// Provisioning is cloud-init's outcome on the latest boot; nil for an
	// image without cloud-init (its agent's first answer is its ready).
	Provisioning *Provisioning `json:"provisioning,omitempty"`

	// Policy is the idle shutdown: the user's, set at any time, even
	// while an operation holds the instance. The store keeps it apart
	// from the rest of the record and writes it only in
	// store.Tx.SetPolicy (and CreateInstance); store.Tx.PutInstance does
	// not write it. Absent from the JSON when zero.
	Policy Policy `json:"policy,omitzero"`
}

// InstanceScripts records which scripts the instance was given (their
// text lives only in its seed) and how far they got.
type InstanceScripts struct {
	Setup          bool `json:"setup,omitempty"`
	Startup        bool `json:"startup,omitempty"`
	TimeoutSeconds int  `json:"timeout_seconds,omitempty"`
	// SetupDone is set once the setup script has run; it never runs again.
	SetupDone bool `json:"setup_done,omitempty"`
	// SetupExit is the setup script's exit code once known.
	SetupExit *int `json:"setup_exit,omitempty"`
}

// Owner is the user the instance belongs to: the assigned user when it was
// created on someone's behalf, else its creator.
func (i *Instance) Owner() string {
	if i.AssignedTo != "" {
		return i.AssignedTo
	}
	return i.Creator
}

// OwnerUID is the uid of Owner when the record knows it.
func (i *Instance) OwnerUID() *int {
	if i.AssignedTo != "" {
		return i.AssignedUID
	}
	return i.CreatorUID
}

// SetState moves the record to s with a reason shown to users.
func (i *Instance) SetState(s State, reason string, now time.Time) {
	i.State = s
	i.StateReason = reason
	i.UpdatedAt = now
}

// ErrInvalidName is matched by every name that breaks the naming rule.
var ErrInvalidName = errors.New("invalid name")

// nameError reads as its message ("invalid vnet name …") and matches
// ErrInvalidName.
type nameError struct{ msg string }

func (e *nameError) Error() string        { return e.msg }
func (e *nameError) Is(target error) bool { return target == ErrInvalidName }

// ValidateName enforces the instance naming rule.
func ValidateName(name string) error { return ValidateNameOf("instance", name) }

// ValidateNameOf enforces the naming rule for instances, VNets and
// subnets: 3–24 characters of [a-z0-9-], starting with a letter, not
// ending with '-'. The rule keeps names valid as hostnames, domain names
// and file names at once; kind only names the thing in the error.
func ValidateNameOf(kind, name string) error {
	const rule = "use 3-24 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'"
	bad := func(format string, args ...any) error {
		return &nameError{msg: fmt.Sprintf("invalid %s name %q: ", kind, clip(name)) + fmt.Sprintf(format, args...) + "; " + rule}
	}
	if len(name) < 3 || len(name) > 24 {
		return bad("%d characters", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := (c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '-'))
		if !ok {
			return bad("character %q at position %d", c, i+1)
		}
	}
	if name[len(name)-1] == '-' {
		return bad("ends with '-'")
	}
	return nil
}

// clip keeps error messages readable when a client sends a huge name.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// NewID returns a random instance id. Ids, not names, key the store and the
// data directory, so a name can be reused after delete without ever
// touching the old instance's files.
func NewID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// DomainName is the libvirt domain name of an instance. The id suffix keeps
// two daemons (or a test daemon next to a real one) from ever colliding.
func DomainName(name, id string) string {
	return "labvm-" + name + "-" + id[:8]
}
