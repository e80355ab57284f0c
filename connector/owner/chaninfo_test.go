package owner

import (
	"context"
	"slices"
	"testing"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// valid keeps the tests written against a boolean CheckUAID short.
func valid(info link.UAIDInfo, err error) (bool, error) { return info.Valid, err }

func TestCheckUAIDChannels(t *testing.T) {
	e := newTestEnv(t)
	uaid, reset := uaidIn(1), uaidIn(2)
	a, b, c, unknown := newChannel(), newChannel(), newChannel(), newChannel()
	e.register(uaid, a)
	e.register(uaid, b)
	e.register(uaid, c)
	e.register(uaid, a) // idempotent
	e.unregister(uaid, b)
	e.unregister(uaid, unknown)
	e.register(reset, a)
	e.reset(reset)
	r := e.start(nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		uaid  string
		valid bool
		want  []string
	}{
		{"registered minus unregistered", uaid, true, []string{a, c}},
		{"reset lists nothing", reset, false, nil},
		{"unknown", uaidIn(3), false, nil},
		{"malformed", "zz", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := r.CheckUAID(ctx, tc.uaid)
			if err != nil || info.Valid != tc.valid {
				t.Fatalf("CheckUAID = %+v, %v; want valid %v", info, err, tc.valid)
			}
			var got []string
			for _, ch := range info.Channels {
				got = append(got, schema.FormatChannelID(ch[:]))
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("channels = %v, want %v", got, want)
			}
		})
	}
}
