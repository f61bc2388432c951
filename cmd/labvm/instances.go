package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/storage"
	"github.com/spf13/cobra"
)

func newCreateCommand(a *app) *cobra.Command {
	var (
		req            api.CreateInstanceRequest
		sshKey         string
		setup, startup string
		scriptTimeout  time.Duration
		wf             waitFlags
		here           bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE --image IMAGE",
		Short: "Create an instance and wait until it is Running",
		Long: `Create a compute instance: a qcow2 disk (120 GiB unless --disk-size says
otherwise) on the image, a cloud-init seed, a private address, then boot it
and wait until the guest says it is ready.

NAME is 3-24 characters of a-z, 0-9 and '-', starting with a letter.
The size can never change afterwards, nor can the datasets: each --dataset
(see ` + "`labvm dataset list`" + `) is read-only at /datasets/NAME in the guest.
SSH is off unless --ssh-key is given.

When the daemon is in a cluster, the instance is placed on a host with
room: up, with the image and the size's memory available, with the most
free cores; labvm then creates it there through ssh (the host's published
ssh:// address). --host ssh://HOST pins the host; --here pins the daemon
labvm talks to.`,
		Example: `  labvm create alice-dev --size Standard_B1s --image debian-12
  labvm create alice-dev --size Standard_B1s --image debian-12 --idle-shutdown 30m
  labvm create alice-dev --size Standard_D3_v2 --image debian-12 --ssh-key ~/.ssh/id_ed25519.pub
  labvm create bob-dev --size Standard_D2s_v3 --image debian-12 --dataset imagenet --dataset coco
  labvm --host ssh://node3 create alice-dev --size Standard_B1s --image debian-12   # on node3`,
		GroupID: "instances",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if sshKey != "" {
				b, err := os.ReadFile(expandHome(sshKey))
				if err != nil {
					return usageErrorf("--ssh-key: %v", err)
				}
				req.SSHPublicKey = string(b)
			}
			for _, sc := range []struct {
				flag, path string
				dst        *string
			}{{"--setup-script", setup, &req.SetupScript}, {"--startup-script", startup, &req.StartupScript}} {
				if sc.path == "" {
					continue
				}
				b, err := os.ReadFile(expandHome(sc.path))
				if err != nil {
					return usageErrorf("%s: %v", sc.flag, err)
				}
				*sc.dst = string(b)
			}
			req.ScriptTimeoutSeconds = int(scriptTimeout.Seconds())
			if !here && a.remote == nil && req.Size != "" && req.Image != "" {
				if err := a.place(cmd.Context(), req); err != nil {
					return err
				}
			}
			op, err := a.client().CreateInstance(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), op, wf, fmt.Sprintf("Instance %s is Running", req.Name))
		},
	}
	cmd.Flags().StringVar(&req.Size, "size", "", "VM size, fixed for the instance's life (see `labvm sizes`)")
	cmd.Flags().StringVar(&req.Image, "image", "", "base image (see `labvm image list`)")
	cmd.Flags().StringVar(&req.DiskSize, "disk-size", "", "OS disk virtual size, e.g. 200G (default 120G)")
	cmd.Flags().StringVar(&sshKey, "ssh-key", "", "OpenSSH public key file to allow SSH logins with (SSH is off without it)")
	cmd.Flags().StringVar(&req.VNet, "vnet", "", "VNet to join (default: the daemon's default VNet)")
	cmd.Flags().StringVar(&req.Subnet, "subnet", "", "subnet of the VNet")
	cmd.Flags().StringVar(&setup, "setup-script", "", "script run once, as root, at the first boot (the instance stays SettingUp until it ends)")
	cmd.Flags().StringVar(&startup, "startup-script", "", "script run as root at every start")
	cmd.Flags().DurationVar(&scriptTimeout, "script-timeout", 0, "after this long a script counts as failed (default 15m)")
	cmd.Flags().BoolVar(&req.NoAutostart, "no-autostart", false, "stay stopped after a host restart (by default an instance that was running starts again)")
	cmd.Flags().StringVar(&req.IdleShutdown, "idle-shutdown", "", "stop it after this long unused, e.g. 30m, 2h, 1d (15m to 3d), or off (default: the host's)")
	cmd.Flags().StringArrayVar(&req.Datasets, "dataset", nil, "dataset the guest sees read-only at /datasets/NAME (repeatable; fixed at create; see `labvm dataset list`)")
	cmd.Flags().StringVar(&req.AssignTo, "assign-to", "", "create on behalf of this user (owners only); they get application access, not you")
	cmd.Flags().BoolVar(&here, "here", false, "in a cluster, create on the daemon labvm talks to rather than placing the instance")
	wf.register(cmd)
	return cmd
}

// datasetsLine names each dataset with where the guest sees it.
func datasetsLine(inst api.Instance) string {
	if len(inst.Datasets) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(inst.Datasets))
	for _, d := range inst.Datasets {
		parts = append(parts, d+" (read-only at /datasets/"+d+")")
	}
	return strings.Join(parts, ", ")
}

func expandHome(p string) string {
	if strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return h + p[1:]
		}
	}
	return p
}

func newShowCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show an instance's details",
		GroupID: "instances",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := a.client().Instance(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, inst)
			}
			state := stateText(inst)
			if inst.StateReason != "" {
				state += " — " + inst.StateReason
			}
			ssh := "off (create with --ssh-key to enable)"
			if inst.SSH {
				ssh = "on, key only, user " + inst.GuestUser
			}
			owner := inst.Creator
			if inst.AssignedTo != "" {
				owner = fmt.Sprintf("%s (created by %s)", inst.AssignedTo, inst.Creator)
			}
			rows := [][2]string{
				{"Name", inst.Name},
				{"State", state},
				{"Size", fmt.Sprintf("%s (%d vCPU, %s memory, family %s)", inst.Size.Name, inst.Size.VCPUs, storage.FormatIEC(int64(inst.Size.MemoryMiB)<<20), inst.Size.Family)},
				{"Image", fmt.Sprintf("%s (sha256 %s)", inst.Image, short(inst.ImageDigest))},
				{"IP", orDash(inst.IP)},
				{"VNet/subnet", inst.VNet + "/" + inst.Subnet + " (no port open outside the host; use labvm ssh/forward)"},
				{"MAC", inst.MAC},
				{"Disk", fmt.Sprintf("%s virtual, %s used on the host", storage.FormatIEC(inst.DiskVirtual), storage.FormatIEC(inst.DiskUsed))},
				{"SSH", ssh},
				{"Provisioning", provisioningLine(inst)},
				{"Scripts", scriptsLine(inst)},
				{"Idle", idleLine(inst)},
				{"Datasets", datasetsLine(inst)},
				{"Owner", owner},
				{"Created", inst.CreatedAt.Local().Format("2006-01-02 15:04:05 MST") + " (" + ago(inst.CreatedAt) + ")"},
				{"Host", inst.Host},
				{"Domain", inst.Domain + " (" + inst.Accel + ")"},
				{"ID", inst.ID},
			}
			for _, line := range scheduleLines(inst) {
				rows = append(rows, [2]string{"Schedule", line})
			}
			w := bufio.NewWriter(a.stdout)
			for _, r := range rows {
				fmt.Fprintf(w, "%-12s %s\n", r[0]+":", r[1])
			}
			return w.Flush()
		},
	}
}

// provisioningLine tells how cloud-init did on the latest boot. Its
// errors were written by the guest; the daemon has escaped them.
func provisioningLine(inst api.Instance) string {
	p := inst.Provisioning
	if p == nil {
		return "- (no cloud-init result read this boot)"
	}
	line := "cloud-init " + string(p.Status)
	if len(p.Errors) > 0 {
		line += ": " + strings.Join(p.Errors, "; ")
	}
	if p.Status != api.ProvisioningRunning {
		line += "; output: labvm logs " + inst.Name + " --cloud-init"
	}
	return line
}

func scriptsLine(inst api.Instance) string {
	var parts []string
	if inst.SetupScript {
		st := "setup (pending)"
		if inst.SetupExit != nil {
			st = fmt.Sprintf("setup (exited %d)", *inst.SetupExit)
		}
		parts = append(parts, st)
	}
	if inst.Startup {
		parts = append(parts, "startup (every boot)")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ") + "; output: labvm logs " + inst.Name + " --setup|--startup"
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

func newListCommand(a *app) *cobra.Command {
	var opts client.ListOptions
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List instances",
		Example: `  labvm list --mine
  labvm list --cluster          # every host of the cluster, with a HOST column`,
		GroupID: "instances",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all {
				return a.listCluster(cmd, opts.Mine, opts.Owner)
			}
			if a.json() {
				// Passed through, indented: decoding 10,000 instances
				// only to encode them again cost most of the command.
				raw, err := a.client().InstancesJSON(cmd.Context(), opts)
				if err != nil {
					return err
				}
				return printRawJSON(a.stdout, raw)
			}
			// The table needs only the summary view: under a third of the
			// bytes, and no per-instance disk lookups in the daemon.
			// Decoding 10,000 of them makes ~10 MB of garbage in a process
			// that exits once it has printed: collecting it at 4× the live
			// heap rather than 2× saves most of the collector's work.
			debug.SetGCPercent(400)
			list, err := a.client().InstanceSummaries(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintln(a.stdout, "No instances. Create one with `labvm create NAME --size SIZE --image IMAGE`.")
				return nil
			}
			rows := make([][]string, 0, len(list))
			for _, i := range list {
				rows = append(rows, []string{i.Name, stateWithJobs(i.State, i.JobsRunning, i.JobsQueued), i.Size, i.Image, orDash(i.IP), i.Owner, ago(i.CreatedAt)})
			}
			return table(a.stdout, []string{"name", "state", "size", "image", "ip", "owner", "created"}, rows)
		},
	}
	cmd.Flags().BoolVar(&opts.Mine, "mine", false, "only instances you created or that are assigned to you")
	cmd.Flags().StringVar(&opts.Owner, "owner", "", "only instances created by or assigned to this user")
	cmd.Flags().BoolVar(&all, "cluster", false, "every instance of this daemon's cluster, with its host (as each host last published it)")
	return cmd
}

func newResizeCommand(a *app) *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:     "resize NAME --size SIZE",
		Short:   "Explain that sizes are fixed (an instance's size never changes)",
		GroupID: "instances",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if size == "" {
				return usageErrorf("--size is required")
			}
			_, err := a.client().UpdateInstance(cmd.Context(), args[0], api.UpdateInstanceRequest{Size: size})
			if err == nil {
				fmt.Fprintf(a.stdout, "%s already has size %s\n", args[0], size)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "the size you wanted")
	return cmd
}

// lifecycleCommand builds start, stop and restart, which differ only in
// the call and the words.
func lifecycleCommand(a *app, use, short, done string, call func(a *app, cmd *cobra.Command, name string) (api.Operation, error)) *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{
		Use:     use + " NAME",
		Short:   short,
		GroupID: "instances",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := call(a, cmd, args[0])
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), op, wf, fmt.Sprintf("Instance %s %s", args[0], done))
		},
	}
	wf.register(cmd)
	return cmd
}

func newStartCommand(a *app) *cobra.Command {
	return lifecycleCommand(a, "start", "Start a stopped instance and wait until it is Running", "is Running",
		func(a *app, cmd *cobra.Command, name string) (api.Operation, error) {
			return a.client().Start(cmd.Context(), name)
		})
}

func newStopCommand(a *app) *cobra.Command {
	cmd := lifecycleCommand(a, "stop", "Shut an instance down and deallocate it (the disk is kept)", "is Stopped (deallocated; disk kept)",
		func(a *app, cmd *cobra.Command, name string) (api.Operation, error) {
			return a.client().Stop(cmd.Context(), name)
		})
	cmd.Long = `Stop asks the guest to power off (ACPI), waits for it, and destroys the
domain if it does not go in time. No QEMU process and no memory stay
allocated; the disk, the address and the quota are kept, so the instance
can always start again.`
	return cmd
}

func newRestartCommand(a *app) *cobra.Command {
	return lifecycleCommand(a, "restart", "Shut an instance down and start it again", "is Running",
		func(a *app, cmd *cobra.Command, name string) (api.Operation, error) {
			return a.client().Restart(cmd.Context(), name)
		})
}

func newDeleteCommand(a *app) *cobra.Command {
	var (
		yes bool
		wf  waitFlags
	)
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an instance: its domain, disk, seed and address",
		GroupID: "instances",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				if !isTerminal(a.stdin) {
					return usageErrorf("refusing to delete %s without confirmation: stdin is not a terminal; pass --yes", name)
				}
				fmt.Fprintf(a.stderr, "Delete instance %s and its disk? This cannot be undone. Type the name to confirm: ", name)
				line, _ := bufio.NewReader(a.stdin).ReadString('\n')
				if strings.TrimSpace(line) != name {
					return fmt.Errorf("not confirmed; nothing deleted")
				}
			}
			op, err := a.client().Delete(cmd.Context(), name)
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), op, wf, fmt.Sprintf("Instance %s deleted", name))
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	wf.register(cmd)
	return cmd
}
