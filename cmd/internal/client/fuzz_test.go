package client

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// FuzzOpenNotification: notification frames come from the network. Any
// frame either is refused (no ack possible) or yields one of the three ack
// codes; nothing panics.
func FuzzOpenNotification(f *testing.F) {
	keys, err := webpush.ParseReceiverKeys("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "BTBZMqHH6r4Tts7J_aSIgg")
	if err != nil {
		f.Fatal(err)
	}
	const ch = "1f0b3c0e-8d7a-4c5e-9f00-0123456789ab"
	m, err := webpush.Encrypt(keys.Subscription("https://x/y"), []byte("seed"), webpush.EncryptOptions{Encoding: webpush.AESGCM})
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := json.Marshal(map[string]any{
		"messageType": "notification", "channelID": ch, "version": "v1",
		"data":    base64.RawURLEncoding.EncodeToString(m.Body),
		"headers": map[string]string{"encoding": "aesgcm", "encryption": m.Encryption, "crypto_key": m.CryptoKey},
	})
	f.Add(seed)
	f.Add([]byte(`{"messageType":"notification","channelID":"` + ch + `","version":"v2","data":"DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN","headers":{"encoding":"aes128gcm"}}`))
	f.Add([]byte(`{"messageType":"notification","channelID":"` + ch + `","version":"v3"}`))
	f.Add([]byte(`{"messageType":"notification","channelID":"` + ch + `","version":"v4","data":"!!","headers":{"encoding":1}}`))
	f.Add([]byte(`{"channelID":7}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, code, err := openNotification(raw, ch, keys)
		if err != nil {
			return
		}
		switch code {
		case ackDelivered, ackDecryptionError, ackNotDelivered:
		default:
			t.Fatalf("ack code %d", code)
		}
		if r.Version == "" {
			t.Fatal("acking without a version")
		}
		_ = r.text()
	})
}
