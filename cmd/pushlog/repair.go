package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pushlog/pushlog/cmd/internal/embedded"
)

// repairCmd repairs a damaged embedded broker directory.
type repairCmd struct {
	DataDir string `default:"./pushlog-data" env:"PUSHLOG_DATA_DIR" help:"Data directory of the embedded service (stop its serve first)."`
	DryRun  bool   `help:"Only verify and report what a repair would drop."`
}

func (c *repairCmd) Run() error {
	return c.run(os.Stdout)
}

func (c *repairCmd) run(w io.Writer) error {
	lock, err := embedded.LockDir(c.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	dir := filepath.Join(c.DataDir, "kafka")
	var r *embedded.Report
	if c.DryRun {
		r, err = embedded.Verify(dir)
	} else {
		r, err = embedded.Repair(dir)
	}
	if r != nil {
		printRepair(w, r, c.DryRun)
	}
	return err
}

// printRepair reports, per damage, the file, topic/partition, offsets and
// record counts dropped.
func printRepair(w io.Writer, r *embedded.Report, dry bool) {
	verb := "dropped"
	if dry {
		verb = "would drop"
	}
	fmt.Fprintf(w, "%s: %d files, %d batches, %d records intact\n", r.Dir, r.Files, r.Batches, r.Records)
	if len(r.Damage) == 0 {
		fmt.Fprintln(w, "no damage found")
	}
	var total int64
	for _, d := range r.Damage {
		if d.Topic == "" {
			fmt.Fprintf(w, "%s %s: %s, %d bytes\n", verb, d.File, d.Reason, d.Bytes)
			continue
		}
		total += d.Records
		fmt.Fprintf(w, "%s %s/%d offsets %d..%d: %s %d records (%s) from %s\n",
			verb, d.Topic, d.Partition, d.Offset, d.End-1, d.Bound, d.Records, d.Reason, d.File)
	}
	if total > 0 {
		fmt.Fprintf(w, "%s %d records in all; their offsets stay reserved (consumers skip them)\n", verb, total)
	}
	for _, f := range r.IndexFixes {
		fmt.Fprintf(w, "rebuilt index %s (nothing lost)\n", f)
	}
}
