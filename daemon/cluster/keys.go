package cluster

import "strings"

// keys is the layout under /labvm/<cluster>/:
//
//	hosts/<host>             the host's record: capacity, version, time (no lease: kept when lost)
//	alive/<host>             bound to the host's lease: present while it is up
//	instances/<host>/<name>  each instance as its host published it (no lease)
//	names/<name>             the name's holder and its cores: reserved before a create, released at delete
//	quota                    the cluster's core limits, in total and per family
//	usage/total              the cores every name holds (a decimal count)
//	usage/family/<family>    the cores the names of a family hold
//
// A host's own keys (hosts/, alive/, instances/<host>/) are written by
// that host's labvmd only; names/ by the host that holds each name;
// quota by whichever host an owner asks; usage/ by whichever host
// changes names/, in the same transaction.
type keys struct{ root string }

func newKeys(cluster string) keys { return keys{root: "/labvm/" + cluster + "/"} }

func (k keys) hosts() string                  { return k.root + "hosts/" }
func (k keys) host(h string) string           { return k.hosts() + h }
func (k keys) alives() string                 { return k.root + "alive/" }
func (k keys) alive(h string) string          { return k.alives() + h }
func (k keys) instances() string              { return k.root + "instances/" }
func (k keys) hostInstances(h string) string  { return k.instances() + h + "/" }
func (k keys) instance(h, name string) string { return k.hostInstances(h) + name }

func (k keys) names() string        { return k.root + "names/" }
func (k keys) name(n string) string { return k.names() + n }
func (k keys) quota() string        { return k.root + "quota" }

func (k keys) usage() string               { return k.root + "usage/" }
func (k keys) usageTotal() string          { return k.usage() + "total" }
func (k keys) usageFamilies() string       { return k.usage() + "family/" }
func (k keys) usageFamily(f string) string { return k.usageFamilies() + f }

// instanceKey splits instances/<host>/<name> into host and name.
func (k keys) instanceKey(key string) (host, name string, ok bool) {
	rest, found := strings.CutPrefix(key, k.instances())
	if !found {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}
