package doctor

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/network"
)

// Firewalls is the host's labvm firewall tables and their owner records
// (network.FirewallRegistry in labvmd).
type Firewalls interface {
	Survey(ctx context.Context) ([]network.FirewallTable, error)
	RemoveOrphan(ctx context.Context, table string, check func(network.FirewallOwner) error) error
}

// WatchFirewalls has doctor report firewall tables no running labvmd
// owns; own is this daemon's table. Without it (tests over a fake
// network) doctor does not look at nftables.
func (dr *Doctor) WatchFirewalls(fw Firewalls, own string) {
	dr.fw, dr.ownTable = fw, own
}

// firewallFindings reports tables whose recorded owner process is gone,
// and labvm-named tables no owner recorded. A table is repairable only
// when provably orphaned: its owner is gone and no guest of the owner's
// data dir runs (the table may be all that isolates them until their
// labvmd comes back), or those guests are this daemon's, behind its own
// table.
func (dr *Doctor) firewallFindings(ctx context.Context) ([]finding, error) {
	if dr.fw == nil {
		return nil, nil
	}
	tables, err := dr.fw.Survey(ctx)
	if err != nil {
		return nil, fmt.Errorf("survey firewall tables: %w", err)
	}
	var out []finding
	for _, t := range tables {
		byHand := t.DeleteCommands()
		switch {
		case t.Name == dr.ownTable:
			continue // this daemon's, recorded or not
		case t.Owner == nil:
			out = append(out, finding{Finding: api.Finding{Kind: api.FindingUnknownTable, Target: tableTarget(t),
				Detail: "no labvmd recorded it as its own (made by a labvmd older than owner records, by hand, or by another program); a bridge-family table's drops can reach every bridge",
				Fix:    "if no running labvmd uses it (check each one's firewall_table): " + byHand}})
		case t.OwnerAlive:
			continue // another running labvmd's
		default:
			o := *t.Owner
			f := finding{Finding: api.Finding{Kind: api.FindingOrphanTable, Target: tableTarget(t),
				Detail: fmt.Sprintf("made by labvmd pid %d (data dir %s) since %s, which is gone", o.PID, o.DataDir, o.Since.Format("2006-01-02 15:04:05Z07:00"))}}
			guests, why := dr.ownerGuests(ctx, o)
			switch {
			case why != nil:
				f.Fix = fmt.Sprintf("%v; if its guests are gone: %s", why, byHand)
			case len(guests) > 0:
				f.Fix = fmt.Sprintf("its guests still run behind it (%s): start that labvmd again (it takes the table back) or stop them, then %s", strings.Join(guests, ", "), byHand)
			default:
				f.Fix = "--repair deletes it; by hand: " + byHand
				name := t.Name
				f.repair = func(ctx context.Context) (string, error) {
					err := dr.fw.RemoveOrphan(ctx, name, func(o network.FirewallOwner) error {
						guests, why := dr.ownerGuests(ctx, o)
						if why != nil {
							return why
						}
						if len(guests) > 0 {
							return fmt.Errorf("its guests run: %s", strings.Join(guests, ", "))
						}
						return nil
					})
					if err != nil {
						return "", err
					}
					return "deleted orphaned firewall table " + name + " (" + byHand + ")", nil
				}
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func tableTarget(t network.FirewallTable) string {
	return strings.Join(t.Families, "+") + " " + t.Name
}

// ownerGuests names the running domains with a disk in o's data dir,
// other than this daemon's own guests (which this daemon's table
// serves); an error says why it cannot tell.
func (dr *Doctor) ownerGuests(ctx context.Context, o network.FirewallOwner) ([]string, error) {
	if filepath.Clean(o.DataDir) == filepath.Clean(dr.paths.DataDir) {
		return nil, nil
	}
	fl, ok := dr.hv.(domainFiler)
	if !ok {
		return nil, fmt.Errorf("cannot tell whether guests of %s still run", o.DataDir)
	}
	domains, err := dr.hv.OwnedDomains(ctx)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	prefix := filepath.Clean(o.DataDir) + string(filepath.Separator)
	var out []string
	for _, dom := range domains {
		files, err := fl.DomainFiles(ctx, dom.Name)
		if err != nil {
			return nil, fmt.Errorf("files of domain %s: %w", dom.Name, err)
		}
		if slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, prefix) }) {
			out = append(out, dom.Name)
		}
	}
	return out, nil
}
