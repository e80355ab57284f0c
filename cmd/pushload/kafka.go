package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaCmd measures the broker alone, the floor under pushlog's push →
// socket latency on it: records produced the way ingest produces a push
// (acks=all, no linger) and read back the way the owner reads them (a
// fetch that returns as soon as a record is there).
type kafkaCmd struct {
	Brokers  string        `env:"KAFKA_BROKERS" required:"" help:"Kafka bootstrap servers (host:port,...)."`
	Rate     float64       `default:"100" help:"Records per second, on an open-loop schedule."`
	Duration time.Duration `default:"20s" help:"Measured window."`
	Warmup   time.Duration `default:"5s" help:"Unmeasured records first (the broker's JIT warms up: its first seconds are far slower)."`
	Size     int           `default:"300" help:"Record value bytes (a 256-byte push and its event framing)."`
}

func (cmd *kafkaCmd) Run(ctx context.Context) error { return printed(cmd.run(ctx)) }

func (cmd *kafkaCmd) run(ctx context.Context) (*report, error) {
	if cmd.Rate <= 0 || cmd.Duration <= 0 || cmd.Warmup < 0 || cmd.Size < 8 || cmd.Size > 1<<20 {
		return nil, errors.New("--rate and --duration must be positive, --size 8 B to 1 MiB")
	}
	seeds := kgo.SeedBrokers(strings.Split(cmd.Brokers, ",")...)
	adm, err := kgo.NewClient(seeds)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	defer adm.Close()
	topic := fmt.Sprintf("pushload-kafka-%d", time.Now().UnixNano())
	ka := kadm.NewClient(adm)
	if r, err := ka.CreateTopic(ctx, 1, -1, nil, topic); err != nil || r.Err != nil {
		return nil, fmt.Errorf("create topic %s: %w", topic, errors.Join(err, r.Err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = ka.DeleteTopic(dctx, topic)
	}()
	prod, err := kgo.NewClient(seeds, kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	defer prod.Close()
	cons, err := kgo.NewClient(seeds, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	defer cons.Close()
	return cmd.measure(ctx, prod, cons)
}

// measure produces on schedule and reads back until every record of the
// window arrived (or a drain of 5 s passed).
func (cmd *kafkaCmd) measure(ctx context.Context, prod, cons *kgo.Client) (*report, error) {
	var (
		mu       sync.Mutex
		acks     []time.Duration
		e2e      []time.Duration
		failed   int
		received int
	)
	start := time.Now()
	from := start.Add(cmd.Warmup)
	total := int64(cmd.Rate * (cmd.Warmup + cmd.Duration).Seconds())
	rctx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for rctx.Err() == nil {
			fs := cons.PollFetches(rctx)
			now := time.Now()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				sent := time.Unix(0, int64(binary.BigEndian.Uint64(r.Value)))
				if !sent.Before(from) {
					e2e = append(e2e, now.Sub(sent))
					received++
				}
			})
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	for i := int64(0); i < total && ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(due(start, cmd.Rate, i))):
		}
		v := make([]byte, cmd.Size)
		sent := time.Now()
		binary.BigEndian.PutUint64(v, uint64(sent.UnixNano()))
		wg.Add(1)
		prod.Produce(ctx, &kgo.Record{Value: v}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			d := time.Since(sent)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
			case !sent.Before(from):
				acks = append(acks, d)
			}
		})
	}
	wg.Wait()
	// Every record acknowledged in the window is waited for (a producer
	// that fell behind sends more than Rate·Duration of them after from).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		caught := received >= len(acks)
		mu.Unlock()
		if caught {
			break
		}
	}
	stopRead()
	<-readDone
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	r := &report{}
	r.add("mode", "kafka")
	r.add("rate", cmd.Rate)
	r.add("records", len(acks))
	r.add("failed", failed)
	r.add("lost", max(int64(len(acks))-int64(received), 0))
	aq := quantiles(acks, .5, .99, 1)
	r.add("ack_p50_ms", aq[0])
	r.add("ack_p99_ms", aq[1])
	r.add("ack_max_ms", aq[2])
	eq := quantiles(e2e, .5, .9, .99, .999, 1)
	r.add("e2e_p50_ms", eq[0])
	r.add("e2e_p90_ms", eq[1])
	r.add("e2e_p99_ms", eq[2])
	r.add("e2e_p999_ms", eq[3])
	r.add("e2e_max_ms", eq[4])
	if len(acks) == 0 || failed > 0 {
		return r, fmt.Errorf("%d records acknowledged, %d failed: %s", len(acks), failed, r)
	}
	return r, nil
}
