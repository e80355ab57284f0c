package main

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// defaultDataDir is serve's --data-dir default, where operator commands
// look for a running embedded serve.
const defaultDataDir = "./pushlog-data"

// kafkaFlags connect an operator command to a deployment's Kafka: the
// brokers given, or else the embedded broker of the serve running on
// --data-dir (its runtime file).
type kafkaFlags struct {
	KafkaBrokers []string `env:"KAFKA_BROKERS" help:"Kafka bootstrap brokers (default: the embedded broker of the pushlog serve running on --data-dir)."`
	Namespace    string   `env:"PUSHLOG_NAMESPACE" help:"Prefix of every topic and consumer group (default: the running serve's, else pushlog)."`
	DataDir      string   `default:"./pushlog-data" env:"PUSHLOG_DATA_DIR" help:"Data directory of a running embedded serve, read when no brokers are given."`
}

// resolve fills the brokers and namespace: flags and environment first,
// else the running serve's runtime file.
func (k *kafkaFlags) resolve() (schema.Names, error) {
	brokers := splitList(k.KafkaBrokers)
	if len(brokers) == 0 {
		info, err := findServe(cmp.Or(k.DataDir, defaultDataDir))
		if err != nil {
			return schema.Names{}, fmt.Errorf("no --kafka-brokers (KAFKA_BROKERS) given and %w", err)
		}
		brokers = info.KafkaBrokers
		k.Namespace = cmp.Or(k.Namespace, info.Namespace)
	}
	k.KafkaBrokers = brokers
	k.Namespace = cmp.Or(k.Namespace, schema.DefaultNamespace)
	names, err := schema.NamesFor(k.Namespace)
	if err != nil {
		return schema.Names{}, fmt.Errorf("--namespace: %w", err)
	}
	return names, nil
}

// admin returns an admin client; closeFn closes it.
func (k *kafkaFlags) admin() (adm *kadm.Client, names schema.Names, closeFn func(), err error) {
	names, err = k.resolve()
	if err != nil {
		return nil, names, nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.KafkaBrokers...), kgo.ClientID("pushlog-ops"), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		return nil, names, nil, fmt.Errorf("kafka client: %w", err)
	}
	return kadm.NewClient(cl), names, cl.Close, nil
}

// open returns a client and the options it was made with.
func (k *kafkaFlags) open() (schema.Names, []kgo.Opt, *kgo.Client, error) {
	names, err := k.resolve()
	if err != nil {
		return schema.Names{}, nil, nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(k.KafkaBrokers...), kgo.ClientID("pushlog-ops")}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return schema.Names{}, nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	return names, opts, cl, nil
}

// clickhouseFlags connect an analytics command to ClickHouse: the address
// given, or else the running serve's (its runtime file).
type clickhouseFlags struct {
	Addr     string `name:"clickhouse-addr" aliases:"addr" env:"CLICKHOUSE_ADDR" help:"ClickHouse native address (host:port; default: the one the pushlog serve running on --data-dir uses)."`
	Database string `name:"clickhouse-db" aliases:"database" env:"PUSHLOG_CLICKHOUSE_DB" help:"ClickHouse database (default: the running serve's, else pushlog)."`
}

// resolve fills the address and database.
func (c *clickhouseFlags) resolve(dataDir string) error {
	if c.Addr == "" {
		info, err := findServe(cmp.Or(dataDir, defaultDataDir))
		if err != nil {
			return fmt.Errorf("no --clickhouse-addr (CLICKHOUSE_ADDR) given and %w", err)
		}
		if info.ClickHouseAddr == "" {
			return fmt.Errorf("no --clickhouse-addr (CLICKHOUSE_ADDR) given, and the pushlog serve running on %s (pid %d) has analytics off: "+
				"start ClickHouse, then pass --clickhouse-addr here and to serve", cmp.Or(dataDir, defaultDataDir), info.PID)
		}
		c.Addr = info.ClickHouseAddr
		c.Database = cmp.Or(c.Database, info.ClickHouseDB)
	}
	c.Database = cmp.Or(c.Database, analyticsDefaultDB)
	return nil
}

// analyticsDefaultDB is the database when none is configured.
const analyticsDefaultDB = "pushlog"

// splitList splits comma-separated entries and drops empty ones.
func splitList(in []string) []string {
	var out []string
	for _, b := range in {
		for _, part := range strings.Split(b, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
