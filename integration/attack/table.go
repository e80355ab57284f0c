package attack

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints one row per result: attack, sent, answers by status,
// whether the server was still up and other users' pushes still arrived,
// the heap change (when measured), elapsed time and notes.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK\tSENT\tANSWERS\tSERVER UP\tOTHERS OK\tHEAP Δ\tELAPSED\tNOTE")
	for _, r := range results {
		heap := "-"
		if r.HeapDelta != nil {
			heap = fmt.Sprintf("%+.1f MB", float64(*r.HeapDelta)/(1<<20))
		}
		note := strings.TrimSpace(strings.Join([]string{r.Error, r.Note}, " "))
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Attack, r.Sent, r.AnswersString(),
			yesNo(r.ServerUp), yesNo(r.OthersOK), heap, r.Elapsed.Round(time.Millisecond), note)
	}
	return tw.Flush()
}

// WriteJSON prints the results as one JSON array.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// Healthy reports whether every attack left the server up and other
// users served.
func Healthy(results []Result) bool {
	for _, r := range results {
		if !r.ServerUp || !r.OthersOK {
			return false
		}
	}
	return true
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}
