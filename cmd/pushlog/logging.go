package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

type logFlags struct {
	Format string `default:"text" enum:"text,json" env:"PUSHLOG_LOG_FORMAT" help:"Log format: text or json."`
	Level  string `default:"info" enum:"debug,info,warn,error" env:"PUSHLOG_LOG_LEVEL" help:"Minimum log level."`
}

func (f logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(f.Level))); err != nil {
		return nil, fmt.Errorf("log level %q: %w", f.Level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if f.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
