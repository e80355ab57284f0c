// Package projector holds the folds of pushlog's logs into compacted
// state: the channel projector (pushlog.registrations → the compacted
// pushlog.channels topic, channels.go) and the gone set ingest answers
// 410 from (gone.go). The channel projector is a schema/group member; the
// analytics projector, whose state is ClickHouse, lives in package
// analytics beside its tables.
package projector
