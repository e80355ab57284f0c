package connector

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// produceSync writes ev and waits until it is durable (acks=all): a reply
// that depends on the fact (register, unregister, a UAID reset) is sent only
// after this returns nil.
func (s *Server) produceSync(ev *pb.Event) error {
	rec, err := s.cfg.Names.Record(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ProduceTimeout)
	defer cancel()
	if err := s.cfg.Producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("produce %s: %w", schema.TypeName(ev), err)
	}
	return nil
}

// produceAsync writes ev without waiting (presence, acks: no reply depends
// on them). Failures are logged. Records of one UAID keep their order.
func (s *Server) produceAsync(ev *pb.Event) {
	rec, err := s.cfg.Names.Record(ev)
	if err != nil {
		s.log.Error("encode event", "err", err)
		return
	}
	name := schema.TypeName(ev)
	// Not s.ctx: events of connections closed by Shutdown must still go
	// out; Shutdown flushes them.
	s.cfg.Producer.Produce(s.detached, rec, func(r *kgo.Record, err error) {
		if err != nil {
			s.log.Warn("produce failed", "type", name, "uaid", string(r.Key), "err", err)
		}
	})
}

func (s *Server) newEvent(uaid string) *pb.Event {
	return schema.NewEvent(uaid, time.Now())
}

func (s *Server) produceConnected(c *conn) {
	ev := s.newEvent(c.proto.UAID().String())
	ev.Body = &pb.Event_Connected{Connected: &pb.Connected{
		Node:      s.cfg.NodeID,
		LinkAddr:  s.cfg.LinkAddr,
		ConnId:    c.ConnID(),
		SinceMs:   time.Unix(0, c.since).UnixMilli(),
		UserAgent: c.ua,
	}}
	s.produceAsync(ev)
}

func (s *Server) produceDisconnected(c *conn) {
	ev := s.newEvent(c.proto.UAID().String())
	ev.Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{
		Node:       s.cfg.NodeID,
		ConnId:     c.ConnID(),
		DurationMs: time.Since(time.Unix(0, c.since)).Milliseconds(),
	}}
	s.produceAsync(ev)
}
