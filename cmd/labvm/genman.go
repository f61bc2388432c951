package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenManCommand is `labvm __gen-man DIR`, hidden: it writes a man page
// per command (labvm.1, labvm-create.1, …) from the commands' own help, for
// `make deb`. SOURCE_DATE_EPOCH, when set, dates the pages, so a package
// built twice from the same commit holds the same pages.
func newGenManCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    "__gen-man DIR",
		Short:  "Write the man pages of every labvm command into DIR (packaging)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			date := time.Now()
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				sec, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return usageErrorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", s)
				}
				date = time.Unix(sec, 0).UTC()
			}
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{Title: "LABVM", Section: "1", Source: "labvm", Manual: "labvm manual", Date: &date}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	}
}
