package owner

import (
	"context"
	"fmt"
	"unique"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushlog/pushlog/schema"
)

// fetchAt reads one batch of records of topic/p from offset off with a
// single Fetch to the partition leader. It is stateless (no consumer, no
// fetch session), so concurrent re-reads and bootstraps do not interfere.
// An empty result with no error means there is nothing at or after off
// below the high watermark.
func fetchAt(ctx context.Context, cl *kgo.Client, topic string, p int32, off int64, maxBytes int32) (kgo.FetchPartition, error) {
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	meta, err := cl.RequestCachedMetadata(ctx, mreq, 0)
	if err != nil {
		return kgo.FetchPartition{}, fmt.Errorf("metadata: %w", err)
	}
	leader, id := int32(-1), [16]byte{}
	for _, t := range meta.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return kgo.FetchPartition{}, fmt.Errorf("metadata of %s: %w", topic, err)
		}
		id = t.TopicID
		for _, mp := range t.Partitions {
			if mp.Partition == p {
				leader = mp.Leader
			}
		}
	}
	if leader < 0 {
		return kgo.FetchPartition{}, fmt.Errorf("no leader for %s/%d", topic, p)
	}

	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxBytes = maxBytes
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = p
	rp.FetchOffset = off
	rp.PartitionMaxBytes = maxBytes
	rp.CurrentLeaderEpoch = -1
	rp.LogStartOffset = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	kresp, err := cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		return kgo.FetchPartition{}, fmt.Errorf("fetch: %w", err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return kgo.FetchPartition{}, fmt.Errorf("fetch: %w", err)
	}
	for _, t := range resp.Topics {
		for i := range t.Partitions {
			if t.Partitions[i].Partition != p {
				continue
			}
			fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: topic, Partition: p, Offset: off}, &t.Partitions[i], kgo.DefaultDecompressor(), nil)
			if fp.Err != nil {
				return fp, fmt.Errorf("fetch %s/%d at %d: %w", topic, p, off, fp.Err)
			}
			return fp, nil
		}
	}
	return kgo.FetchPartition{}, fmt.Errorf("fetch %s/%d: partition missing from the response", topic, p)
}

// fetchBodies re-reads the payloads of the messages at offsets (ascending)
// in pushlog.messages partition p. Offsets that are not there any more
// are left out of the result.
func (o *Owner) fetchBodies(ctx context.Context, p int32, offsets []int64) (map[int64]*body, error) {
	out := make(map[int64]*body, len(offsets))
	want := make(map[int64]bool, len(offsets))
	for _, off := range offsets {
		want[off] = true
	}
	for i := 0; i < len(offsets); {
		fp, err := fetchAt(ctx, o.adm, o.cfg.Names.Messages, p, offsets[i], 1<<20)
		if err != nil {
			return out, err
		}
		if len(fp.Records) == 0 {
			break
		}
		for _, rec := range fp.Records {
			if !want[rec.Offset] {
				continue
			}
			ev, err := schema.Decode(rec)
			if err != nil {
				continue
			}
			if ma := ev.GetMessageAccepted(); ma != nil {
				out[rec.Offset] = &body{payload: ma.GetPayload(), encoding: unique.Make(ma.GetEncoding()), encryption: ma.GetEncryption(), cryptoKey: ma.GetCryptoKey()}
			}
		}
		last := fp.Records[len(fp.Records)-1].Offset
		for i < len(offsets) && offsets[i] <= last {
			i++
		}
	}
	return out, nil
}
