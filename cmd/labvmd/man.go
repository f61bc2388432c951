package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// writeMan writes labvmd.8, built from the flags' own help, into dir
// (`make deb`). SOURCE_DATE_EPOCH, when set, dates it.
func writeMan(dir string) error {
	date := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", s)
		}
		date = time.Unix(sec, 0).UTC()
	}
	fs := flag.NewFlagSet("labvmd", flag.ContinueOnError)
	defineFlags(fs)
	path := filepath.Join(dir, "labvmd.8")
	if err := os.WriteFile(path, []byte(manPage(fs, date)), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Println("wrote", path)
	return nil
}

// manPage renders labvmd(8) in roff.
func manPage(fs *flag.FlagSet, date time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH LABVMD 8 %q labvm \"labvm manual\"\n", date.Format("2006-01-02"))
	b.WriteString(`.SH NAME
labvmd \- the labvm daemon: personal development VMs on libvirt/QEMU
.SH SYNOPSIS
.B labvmd
[\fIoptions\fR]
.SH DESCRIPTION
.B labvmd
runs as root, serves the labvm API on a Unix socket
(\fI/run/labvm/labvm.sock\fR, group \fIlabvm\fR) and manages instances as
transient libvirt domains on \fIqemu:///system\fR, with their disks under
\fI/var/lib/labvm\fR. Users talk to it with
.BR labvm (1).
It is normally started by systemd through \fIlabvmd.socket\fR and
\fIlabvmd.service\fR.
.PP
Settings come from \fI/etc/labvm/labvmd.yaml\fR (see
\fI/etc/labvm/labvmd.yaml.example\fR); a flag given on the command line
overrides the file.
.SH OPTIONS
`)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, ".TP\n.B \\-\\-%s", roff(f.Name))
		if name != "" {
			fmt.Fprintf(&b, " \\fI%s\\fR", roff(name))
		}
		b.WriteString("\n" + roff(usage))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(&b, " (default %s)", roff(f.DefValue))
		}
		b.WriteString("\n")
	})
	b.WriteString(`.SH FILES
.TP
.I /etc/labvm/labvmd.yaml
configuration (optional)
.TP
.I /var/lib/labvm
database, images and instance disks
.TP
.I /run/labvm/labvm.sock
the API socket
.SH SEE ALSO
.BR labvm (1),
.BR systemctl (1),
.BR virsh (1)
`)
	return b.String()
}

// roff escapes text for a roff body: backslashes, leading dots and
// apostrophes, and hyphens (which groff would otherwise render as
// typographic dashes).
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
