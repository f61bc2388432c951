package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Which labvmd made a firewall table? nftables tables carry no comment
// the netlink library can set, and a table outlives its daemon on
// purpose (guests keep running across a restart). So each daemon records
// the table it is about to install in a host-wide registry, one file per
// table name, with what identifies its process beyond the pid: the
// process's start time and the boot. A table is orphaned when its record
// names a process that is gone; a table without a record is nobody's
// provably (made before records existed, by hand, or by another program).

// DefaultFirewallOwners is the host-wide registry every labvmd writes to,
// whatever its own run directory: tables are host-wide too.
const DefaultFirewallOwners = "/run/labvm/firewall-owners"

// FirewallOwner is the record of the daemon that installs a table.
type FirewallOwner struct {
	Table   string `json:"table"`
	PID     int    `json:"pid"`
	DataDir string `json:"data_dir"`
	// Start is the process's start time (clock ticks after boot, field 22
	// of /proc/PID/stat): a pid reused by another process has another.
	Start  uint64    `json:"start_time"`
	BootID string    `json:"boot_id"`
	Since  time.Time `json:"since"`
}

// FirewallRegistry is the directory of owner records.
type FirewallRegistry struct {
	Dir string
}

// RecordPath is the file that records table's owner (JSON of a
// FirewallOwner).
func (r FirewallRegistry) RecordPath(table string) string { return filepath.Join(r.Dir, table+".json") }

// locked runs fn holding the registry's lock, so a daemon's registration
// and a doctor's check-then-delete do not interleave.
func (r FirewallRegistry) locked(fn func() error) error {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return fmt.Errorf("firewall owner registry: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(r.Dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("firewall owner registry: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock firewall owner registry: %w", err)
	}
	defer func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }()
	return fn()
}

// ErrTableOwned is returned by Register when another running process
// records the table as its own: two daemons would rewrite each other's
// rules.
var ErrTableOwned = errors.New("firewall table owned by another running labvmd")

// Register records this process as the owner of table, before it
// installs it. A record of a process that is gone is replaced; one of a
// live other process is not, and Register fails with ErrTableOwned.
func (r FirewallRegistry) Register(table, dataDir string) error {
	if err := validateTableName(table); err != nil {
		return err
	}
	me, err := ProcessOwner(os.Getpid())
	if err != nil {
		return err
	}
	me.Table, me.DataDir, me.Since = table, dataDir, time.Now().UTC()
	return r.locked(func() error {
		if old, err := r.read(table); err == nil && old.PID != me.PID && old.Alive() {
			return fmt.Errorf("%w: %s records pid %d (data dir %s)", ErrTableOwned, r.RecordPath(table), old.PID, old.DataDir)
		}
		raw, err := json.Marshal(me)
		if err != nil {
			return err
		}
		tmp := r.RecordPath(table) + ".tmp"
		if err := os.WriteFile(tmp, raw, 0o644); err != nil {
			return fmt.Errorf("record firewall owner: %w", err)
		}
		if err := os.Rename(tmp, r.RecordPath(table)); err != nil {
			return fmt.Errorf("record firewall owner: %w", err)
		}
		return nil
	})
}

// Forget drops table's record (its table was removed).
func (r FirewallRegistry) Forget(table string) error {
	if err := validateTableName(table); err != nil {
		return err
	}
	return r.locked(func() error { return r.forget(table) })
}

func (r FirewallRegistry) forget(table string) error {
	if err := os.Remove(r.RecordPath(table)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forget firewall owner: %w", err)
	}
	return nil
}

func (r FirewallRegistry) read(table string) (FirewallOwner, error) {
	var o FirewallOwner
	raw, err := os.ReadFile(r.RecordPath(table))
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return o, fmt.Errorf("firewall owner record %s: %w", r.RecordPath(table), err)
	}
	return o, nil
}

// ProcessOwner is a record of process pid as it runs now (table and
// data dir left empty).
func ProcessOwner(pid int) (FirewallOwner, error) {
	start, err := processStart(pid)
	if err != nil {
		return FirewallOwner{}, err
	}
	boot, err := bootID()
	if err != nil {
		return FirewallOwner{}, err
	}
	return FirewallOwner{PID: pid, Start: start, BootID: boot}, nil
}

// Alive reports whether the recorded process still runs: the same pid,
// started at the same time, in this boot.
func (o FirewallOwner) Alive() bool {
	if boot, err := bootID(); err != nil || boot != o.BootID {
		return err != nil // cannot tell: count it alive
	}
	start, err := processStart(o.PID)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, errProcessExited) {
		return false
	}
	return err != nil || start == o.Start
}

// errProcessExited: the pid is a zombie (exited, not yet reaped by its
// parent) or dead. A labvmd killed a moment ago is one until its parent
// waits for it, and its successor must be able to take its table over.
var errProcessExited = errors.New("process exited")

// processStart reads the start time of pid (field 22 of
// /proc/PID/stat), or errProcessExited when the process has exited
// (state Z or X, field 3) even though its pid is not yet reaped.
func processStart(pid int) (uint64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcessStart(pid, raw)
}

func parseProcessStart(pid int, raw []byte) (uint64, error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// or parentheses itself: count fields after the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(raw[i+1:]))
	const startField = 22 - 3 // fields after the name begin at field 3
	if len(fields) <= startField {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	if state := fields[0]; state == "Z" || state == "X" {
		return 0, fmt.Errorf("pid %d: %w (state %s)", pid, errProcessExited, state)
	}
	return strconv.ParseUint(fields[startField], 10, 64)
}

func bootID() (string, error) {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(raw)), err
}

// FirewallTable is a table in the kernel with labvm's shape of name
// (present in the inet and/or bridge family) and what the registry says
// of it.
type FirewallTable struct {
	Name     string
	Families []string // "inet", "bridge"
	// Owner is its record; nil when none names it.
	Owner *FirewallOwner
	// OwnerAlive: the recorded process still runs.
	OwnerAlive bool
}

// DeleteCommands are the nft commands that remove the table by hand.
func (t FirewallTable) DeleteCommands() string {
	var cmds []string
	for _, f := range t.Families {
		cmds = append(cmds, "nft delete table "+f+" "+t.Name)
	}
	return strings.Join(cmds, "; ")
}

// Survey lists the inet and bridge tables that are recorded here or whose
// name starts with labvm's default, each with its owner record. Other
// tables (iptables', Docker's, firewalld's) are not labvm's business.
func (r FirewallRegistry) Survey(ctx context.Context) ([]FirewallTable, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	byName := map[string]*FirewallTable{}
	var names []string
	for _, fam := range []struct {
		f    nftables.TableFamily
		name string
	}{{nftables.TableFamilyINet, "inet"}, {nftables.TableFamilyBridge, "bridge"}} {
		tables, err := conn.ListTablesOfFamily(fam.f)
		if err != nil {
			return nil, fmt.Errorf("list %s tables: %w", fam.name, err)
		}
		for _, t := range tables {
			if byName[t.Name] == nil {
				byName[t.Name] = &FirewallTable{Name: t.Name}
				names = append(names, t.Name)
			}
			byName[t.Name].Families = append(byName[t.Name].Families, fam.name)
		}
	}
	slices.Sort(names)
	var out []FirewallTable
	for _, name := range names {
		t := byName[name]
		o, err := r.read(name)
		switch {
		case err == nil:
			t.Owner, t.OwnerAlive = &o, o.Alive()
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		case !strings.HasPrefix(name, DefaultFirewallTable):
			continue
		}
		out = append(out, *t)
	}
	return out, ctx.Err()
}

// ErrNotOrphaned is returned by RemoveOrphan when, checked again under
// the registry's lock, the table's owner runs or has changed, or the
// caller's own check refuses.
var ErrNotOrphaned = errors.New("firewall table is not orphaned")

// RemoveOrphan deletes table (both families and its accept rules in
// iptables' chains) and its record, if its record still names a process
// that is gone and still, check (the caller's other conditions, such as
// no guest of the owner's data dir running) passes. It holds the
// registry's lock throughout, so a daemon that starts meanwhile with the
// same table records itself first or after, never in between.
func (r FirewallRegistry) RemoveOrphan(ctx context.Context, table string, check func(FirewallOwner) error) error {
	if err := validateTableName(table); err != nil {
		return err
	}
	return r.locked(func() error {
		o, err := r.read(table)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: no owner record names %s", ErrNotOrphaned, table)
		}
		if err != nil {
			return err
		}
		if o.Alive() {
			return fmt.Errorf("%w: its owner pid %d runs", ErrNotOrphaned, o.PID)
		}
		if check != nil {
			if err := check(o); err != nil {
				return fmt.Errorf("%w: %w", ErrNotOrphaned, err)
			}
		}
		if err := RemoveFirewall(ctx, table); err != nil {
			return err
		}
		return r.forget(table)
	})
}
