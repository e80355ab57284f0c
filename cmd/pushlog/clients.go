package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/pushlog/pushlog/cmd/internal/client"
)

type keysCmd struct {
	File string `help:"Also write the key pair to this file (mode 0600)." type:"path"`
}

func (k *keysCmd) Run() error {
	return client.Keys(client.KeysOptions{Out: os.Stdout, File: k.File})
}

type listenCmd struct {
	URL          string `default:"ws://127.0.0.1:8080/" env:"PUSHLOG_LISTEN_URL" help:"WebSocket URL of the connection listener."`
	State        string `help:"File keeping the uaid, channel and keys, so a restart resumes the same subscription." type:"path"`
	ServerKey    string `help:"Application server (VAPID) public key: makes a key-bound (v2) subscription."`
	Count        int    `help:"Exit after this many messages (0: run until interrupted)."`
	JSON         bool   `help:"Print each message as a JSON line."`
	Subscription string `help:"Also write the subscription JSON to this file." type:"path"`
	CAFile       string `name:"cacert" type:"existingfile" help:"Trust this CA for a wss:// URL."`
	Insecure     bool   `help:"Skip TLS verification (testing only)."`
}

func (l *listenCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return client.Listen(ctx, client.ListenOptions{
		URL: l.URL, StateFile: l.State, ServerKey: l.ServerKey, Count: l.Count,
		JSON: l.JSON, SubscriptionOut: l.Subscription, CAFile: l.CAFile, Insecure: l.Insecure,
		Out: os.Stdout, Logger: logger,
	})
}

type sendCmd struct {
	Subscription string        `arg:"" help:"Subscription JSON ({\"endpoint\":…,\"keys\":{…}}) or @file."`
	Message      string        `arg:"" help:"The message (plaintext; it is encrypted for the subscription)."`
	VAPIDKey     string        `name:"vapid-key" env:"PUSHLOG_VAPID_KEY" help:"VAPID private key (base64url) or @keyfile; default: a fresh key pair."`
	Subject      string        `default:"mailto:pushlog@example.com" help:"VAPID subject (mailto: or https: URI)."`
	TTL          int           `default:"86400" help:"TTL in seconds."`
	Topic        string        `help:"Topic: replaces an undelivered message with the same topic."`
	Urgency      string        `enum:"very-low,low,normal,high," default:"" help:"Urgency."`
	Encoding     string        `enum:"aes128gcm,aesgcm" default:"aes128gcm" help:"Content encoding."`
	CAFile       string        `name:"cacert" type:"existingfile" help:"Trust this CA for an HTTPS endpoint."`
	Insecure     bool          `help:"Skip TLS verification (testing only)."`
	Timeout      time.Duration `default:"30s" help:"Request timeout."`
}

func (s *sendCmd) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	_, _, err := client.Send(ctx, client.SendOptions{
		Subscription: s.Subscription, Message: []byte(s.Message), VAPIDPrivateKey: s.VAPIDKey,
		Subject: s.Subject, TTL: s.TTL, Topic: s.Topic, Urgency: s.Urgency, Encoding: s.Encoding,
		CAFile: s.CAFile, Insecure: s.Insecure, Out: os.Stdout,
	})
	return err
}
