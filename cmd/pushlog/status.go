package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pushlog/pushlog/cmd/ops"
)

type statusCmd struct {
	kafkaFlags `embed:""`
	Node       []string `env:"PUSHLOG_STATUS_NODES" help:"Metrics URLs of more pushlog processes to include (host:port of a WebSocket, ingest or --metrics-addr listener, or a full URL); connector nodes announce theirs and are scraped without it. Their connections, pending messages, breakers and projector counters live in the processes."`
	JSON       bool     `help:"Print machine-readable JSON (stable field names)."`
	Partitions bool     `help:"Also list the lag of every partition (the table shows the totals per group and topic)."`
	Analytics  bool     `help:"List the analytics group even if it never ran."`
}

func (c *statusCmd) Run(ctx context.Context) error {
	adm, names, closeFn, err := c.admin()
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := ops.GetStatus(ctx, adm, ops.StatusConfig{Names: names, NodeURLs: c.Node, IncludeAnalytics: c.Analytics})
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(os.Stdout, st, c.Partitions)
	return nil
}

func printStatus(w io.Writer, st *ops.Status, perPartition bool) {
	fmt.Fprintf(w, "namespace %s at %s\n\n", st.Namespace, st.Time.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHOST\tLINK\tMETRICS\tPARTITIONS")
	if len(st.Nodes) == 0 {
		fmt.Fprintln(tw, "(no connector running: nobody owns the partitions)\t\t\t\t")
	}
	var unannounced []string
	for _, n := range st.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.NodeID, n.Host, orDash(n.LinkAddr), orDash(n.MetricsAddr), partitionRanges(n.Partitions))
		if n.MetricsAddr == "" {
			unannounced = append(unannounced, n.NodeID)
		}
	}
	_ = tw.Flush()
	if len(unannounced) > 0 {
		fmt.Fprintf(w, "(%s announced no metrics address (an older version, or a listener on every interface without --link-advertise): pass --node HOST:PORT for it)\n", strings.Join(unannounced, ", "))
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSTATE\tMEMBERS\tTOPIC\tLAG")
	for _, g := range st.Groups {
		byTopic := map[string]int64{}
		var topics []string
		for _, p := range g.Partitions {
			if _, ok := byTopic[p.Topic]; !ok {
				topics = append(topics, p.Topic)
			}
			byTopic[p.Topic] += p.Lag
		}
		sort.Strings(topics)
		for _, t := range topics {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", g.Group, g.State, g.Members, t, byTopic[t])
		}
	}
	_ = tw.Flush()
	if perPartition {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tCOMMITTED\tEND\tLAG")
		for _, g := range st.Groups {
			for _, p := range g.Partitions {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", g.Group, p.Topic, p.Partition, p.Committed, p.End, p.Lag)
			}
		}
		_ = tw.Flush()
	}
	if len(st.Metrics) == 0 {
		fmt.Fprintln(w, "\n(connections, pending messages and breakers live in the processes: no connector node announced a metrics address; pass --node HOST:PORT for each)")
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRICS URL\tNODE\tCONNECTIONS\tPENDING\tOWNED\tBREAKERS\tPROJECTORS")
	for _, m := range st.Metrics {
		if m.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tERROR: %s\t\t\t\t\n", m.URL, orDash(m.NodeID), m.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.URL, orDash(m.NodeID), fmtGauge(m.Connections), fmtGauge(m.Pending), fmtGauge(m.OwnedPartitions), fmtBreakers(m.Breakers), fmtProjectors(m.Projectors))
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtGauge(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", *v)
}

func fmtBreakers(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func fmtProjectors(m map[string]ops.ProjectorMetrics) string {
	if len(m) == 0 {
		return "-"
	}
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s: %.0f batches %.0f rows", k, v.Batches, v.Rows))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// ranges prints partition numbers compactly: 0-3,7.
func partitionRanges(ps []int32) string {
	if len(ps) == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i == j {
			fmt.Fprintf(&b, "%d", ps[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", ps[i], ps[j])
		}
		i = j + 1
	}
	return b.String()
}
