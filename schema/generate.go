package schema

// Regenerate schema/pb from events.proto with tools pinned from the Go
// module proxy: `go generate ./schema`.
//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate
