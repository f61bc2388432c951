package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// RoleAssignment gives a role to a user or, with Group set, to every
// member of a Unix group.
type RoleAssignment struct {
	Principal string `json:"principal"` // user name, or group name when Group
	Group     bool   `json:"group"`
	// UID is the user's uid when assigned: the assignment holds for that
	// account only, not for a later account that reuses the name. Nil for
	// groups and for assignments made before uids were recorded.
	UID        *int      `json:"uid,omitempty"`
	Role       string    `json:"role"`
	AssignedBy string    `json:"assigned_by"`
	AssignedAt time.Time `json:"assigned_at"`
}

func roleKey(principal string, group bool, role string) []byte {
	kind := "user"
	if group {
		kind = "group"
	}
	return []byte(kind + "/" + principal + "/" + role)
}

// PutRole stores an assignment; assigning the same role twice is a no-op.
func (t *Tx) PutRole(a RoleAssignment) error {
	return put(t, bucketRoles, roleKey(a.Principal, a.Group, a.Role), a)
}

// DeleteRole removes an assignment.
func (t *Tx) DeleteRole(principal string, group bool, role string) error {
	k := roleKey(principal, group, role)
	b := t.tx.Bucket(bucketRoles)
	if b.Get(k) == nil {
		return ErrNotFound
	}
	return b.Delete(k)
}

// HasRole reports whether the assignment is stored.
func (t *Tx) HasRole(principal string, group bool, role string) bool {
	return t.tx.Bucket(bucketRoles).Get(roleKey(principal, group, role)) != nil
}

// ReplaceRoles makes list the only assignments: a host in a cluster
// keeps the cluster's roles this way, as its cache of them.
func (t *Tx) ReplaceRoles(list []RoleAssignment) error {
	b := t.tx.Bucket(bucketRoles)
	var keys [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	for _, a := range list {
		if err := t.PutRole(a); err != nil {
			return err
		}
	}
	return nil
}

// Roles lists all assignments.
func (t *Tx) Roles() ([]RoleAssignment, error) {
	out, err := list[RoleAssignment](t, bucketRoles)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return !out[i].Group
		}
		if out[i].Principal != out[j].Principal {
			return out[i].Principal < out[j].Principal
		}
		return out[i].Role < out[j].Role
	})
	return out, err
}

// QuotaLimits are core limits: per VM family and in total. A missing
// family means no limit of its own.
type QuotaLimits struct {
	Total    int            `json:"total,omitempty"`
	Families map[string]int `json:"families,omitempty"`
}

var keyQuotaLimits = []byte("limits")

// QuotaLimits returns the stored limits (nil map when never set).
func (t *Tx) QuotaLimits() (QuotaLimits, bool, error) {
	q, err := get[QuotaLimits](t, bucketQuota, keyQuotaLimits)
	if err == ErrNotFound {
		return QuotaLimits{}, false, nil
	}
	return q, err == nil, err
}

// PutQuotaLimits stores the limits.
func (t *Tx) PutQuotaLimits(q QuotaLimits) error {
	return put(t, bucketQuota, keyQuotaLimits, q)
}

// AuditEntry is one recorded call.
type AuditEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Caller  string    `json:"caller"`
	UID     int       `json:"uid"`
	Action  string    `json:"action"`
	Target  string    `json:"target,omitempty"`
	Outcome string    `json:"outcome"`
	Code    string    `json:"code,omitempty"`
	Message string    `json:"message,omitempty"`
	OpID    string    `json:"operation,omitempty"`
}

// AppendAudit records e and drops the oldest entries beyond max, so the
// log stays bounded however busy the host is.
func (t *Tx) AppendAudit(e AuditEntry, max int) error {
	b := t.tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := b.Put(seqKey(seq), raw); err != nil {
		return err
	}
	// Keys are consecutive sequence numbers and only the oldest are ever
	// deleted, so the count is the distance from the first key.
	c := b.Cursor()
	for k, _ := c.First(); k != nil && seq-binary.BigEndian.Uint64(k)+1 > uint64(max); k, _ = c.First() {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// AuditFilter selects entries.
type AuditFilter struct {
	Since  time.Time
	Target string
	Caller string
	Limit  int
}

// Audit returns matching entries, oldest first, at most Limit of the
// newest ones.
func (t *Tx) Audit(f AuditFilter) ([]AuditEntry, error) {
	var out []AuditEntry
	c := t.tx.Bucket(bucketAudit).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decode audit entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if !f.Since.IsZero() && e.Time.Before(f.Since) {
			break
		}
		if f.Target != "" && e.Target != f.Target {
			continue
		}
		if f.Caller != "" && e.Caller != f.Caller {
			continue
		}
		out = append(out, e)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// ParsePrincipal splits "@group" from "user".
func ParsePrincipal(s string) (name string, group bool) {
	if strings.HasPrefix(s, "@") {
		return s[1:], true
	}
	return s, false
}

// FormatPrincipal is the inverse of ParsePrincipal.
func FormatPrincipal(name string, group bool) string {
	if group {
		return "@" + name
	}
	return name
}
