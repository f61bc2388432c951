package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/labvm/labvm/daemon/client"
	"github.com/spf13/cobra"
)

// defaultContext is the name of "the daemon on this host": always there,
// never stored.
const defaultContext = "default"

// contextEntry is one named daemon: an ssh URL and the far socket.
type contextEntry struct {
	Name   string `json:"name"`
	Host   string `json:"host"`
	Socket string `json:"socket,omitempty"`
}

// contextFile is $XDG_CONFIG_HOME/labvm/contexts.json.
type contextFile struct {
	Current  string         `json:"current,omitempty"`
	Contexts []contextEntry `json:"contexts"`
}

func (f *contextFile) find(name string) (contextEntry, bool) {
	i := slices.IndexFunc(f.Contexts, func(c contextEntry) bool { return c.Name == name })
	if i < 0 {
		return contextEntry{}, false
	}
	return f.Contexts[i], true
}

var contextNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// contextsPath is where contexts are kept: $XDG_CONFIG_HOME/labvm/contexts.json,
// by default ~/.config/labvm/contexts.json, beside labvm's known_hosts.
func contextsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find labvm's contexts file: %w", err)
	}
	return filepath.Join(dir, "labvm", "contexts.json"), nil
}

// readContexts reads the contexts file; a missing one is empty.
func readContexts(path string) (contextFile, error) {
	var f contextFile
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s is not a labvm contexts file (%v); fix or remove it", path, err)
	}
	return f, nil
}

// updateContexts changes the contexts file under an flock, so concurrent
// labvm commands lose nothing, and rewrites it atomically (0600).
func updateContexts(change func(f *contextFile) error) error {
	path, err := contextsPath()
	if err != nil {
		return err
	}
	unlock, err := lockBeside(path)
	if err != nil {
		return err
	}
	defer unlock()
	f, err := readContexts(path)
	if err != nil {
		return err
	}
	if err := change(&f); err != nil {
		return err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, bytes.NewReader(append(b, '\n'))); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newContextCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "Name other hosts' daemons and choose the one labvm talks to",
		Long: `A context names a labvmd on another host, reached through your own OpenSSH
client: labvm runs ` + "`ssh HOST labvm dial-stdio`" + `, which joins ssh to that host's socket.
There you are the Unix user ssh logs you in as, with that user's roles.
ssh's own config, agent, jump hosts and known_hosts apply; labvm opens no
port. "default" is the daemon on this host.

Which daemon a command talks to: --host (or LABVM_HOST), else --context (or
LABVM_CONTEXT), else --socket (or LABVM_SOCKET), else the current context.
Contexts are kept in $XDG_CONFIG_HOME/labvm/contexts.json.`,
		Example: `  labvm context add node3 ssh://alice@node3
  labvm context use node3 && labvm list     # node3's instances
  labvm context list
  labvm context use default                 # back to this host`,
		GroupID:     "daemon",
		Annotations: map[string]string{localOnly: "yes"},
	}
	cmd.AddCommand(newContextAddCommand(a), newContextUseCommand(a), newContextListCommand(a), newContextRemoveCommand(a))
	return cmd
}

func newContextAddCommand(a *app) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "add NAME ssh://[USER@]HOST[:PORT]",
		Short: "Name the labvmd of another host",
		Example: `  labvm context add node3 ssh://node3
  labvm context add lab2 ssh://alice@lab2.example.org:2222 --socket /run/labvm/labvm.sock`,
		Args: exactArgs(2, "NAME and ssh://[USER@]HOST[:PORT]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !contextNameRE.MatchString(name) || name == defaultContext {
				return usageErrorf("context name %q: use letters, digits, '.', '_' and '-' (up to 63), not %q", name, defaultContext)
			}
			t, err := client.ParseSSHURL(args[1])
			if err != nil {
				return usageErrorf("%v", err)
			}
			t.Socket = socket
			if _, err := client.NewSSH(t); err != nil {
				return usageErrorf("%v", err)
			}
			err = updateContexts(func(f *contextFile) error {
				if _, ok := f.find(name); ok {
					return fmt.Errorf("context %s exists; remove it first (`labvm context remove %s`)", name, name)
				}
				f.Contexts = append(f.Contexts, contextEntry{Name: name, Host: t.URL(), Socket: socket})
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Added context %s (%s); use it with `labvm context use %s` or `labvm --context %s …`\n", name, t, name, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "labvmd's socket on the far host (default: the far labvm's)")
	return cmd
}

func newContextUseCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "use NAME",
		Short:   "Talk to NAME's daemon from now on (\"default\": this host's)",
		Example: "  labvm context use node3\n  labvm context use default",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			err := updateContexts(func(f *contextFile) error {
				if name == defaultContext {
					f.Current = ""
					return nil
				}
				if _, ok := f.find(name); !ok {
					return unknownContext(name)
				}
				f.Current = name
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Current context: %s\n", name)
			return nil
		},
	}
}

func newContextListCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the contexts; the current one is marked with *",
		Example: "  labvm context list\n  labvm context list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := contextsPath()
			if err != nil {
				return err
			}
			f, err := readContexts(path)
			if err != nil {
				return err
			}
			current := f.Current
			if current == "" {
				current = defaultContext
			}
			all := append([]contextEntry{{Name: defaultContext, Host: "unix://" + a.localSocket()}}, f.Contexts...)
			if a.json() {
				type row struct {
					contextEntry
					Current bool `json:"current"`
				}
				out := make([]row, len(all))
				for i, c := range all {
					out[i] = row{c, c.Name == current}
				}
				return printJSON(a.stdout, out)
			}
			rows := make([][]string, len(all))
			for i, c := range all {
				mark := ""
				if c.Name == current {
					mark = "*"
				}
				rows[i] = []string{mark, c.Name, c.Host, c.Socket}
			}
			return table(a.stdout, []string{"", "name", "host", "socket"}, rows)
		},
	}
}

func newContextRemoveCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Forget a context (the current one falls back to default)",
		Example: "  labvm context remove node3",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if name == defaultContext {
				return usageErrorf("the %s context is this host's daemon and cannot be removed", defaultContext)
			}
			err := updateContexts(func(f *contextFile) error {
				i := slices.IndexFunc(f.Contexts, func(c contextEntry) bool { return c.Name == name })
				if i < 0 {
					return unknownContext(name)
				}
				f.Contexts = slices.Delete(f.Contexts, i, i+1)
				if f.Current == name {
					f.Current = ""
				}
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Removed context %s\n", name)
			return nil
		},
	}
}

func unknownContext(name string) error {
	return fmt.Errorf("no context named %s; see `labvm context list`, add one with `labvm context add %s ssh://HOST`", name, name)
}
