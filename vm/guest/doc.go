// Package guest owns labvm's side of the contract with the inside of a
// guest: the paths labvm uses there (job output, setup and startup scripts,
// their logs and status files), the shell scripts that run there (the job
// wrapper, the signal and read scripts, the setup/startup runner) and how
// their output is read back and parsed. Everything here is pure: requests
// are vm.ExecRequest values for the guest agent, scripts are text.
//
// It must not know how a request reaches the guest (libvirt, the agent
// protocol), how the scripts get there (the cloud-init documents and the
// seed are storage's, which imports this package, never the reverse), nor
// anything of the daemon: job records, queues, states or storage on the host.
package guest
