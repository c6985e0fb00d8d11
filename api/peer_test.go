package api

import "testing"

// A fingerprint crosses the peer endpoint's query intact, Gen included; a
// node that renders no Gen (six numbers) is read as Gen 0.
func TestPeerParamRoundTrip(t *testing.T) {
	for _, f := range []Fingerprint{
		{Size: 10, MtimeNs: 1, CtimeNs: 2, Ino: 3, Dev: 4},
		{Size: 1 << 40, MtimeNs: -5, CtimeNs: 7, Ino: 1<<64 - 1, Dev: 9, Change: 11, Gen: 1<<63 | 1},
	} {
		got, err := ParsePeerParam(f.PeerParam())
		if err != nil || got != f {
			t.Fatalf("ParsePeerParam(%q) = %+v %v, want %+v", f.PeerParam(), got, err, f)
		}
	}
	if got, err := ParsePeerParam("1.2.3.4.5.6"); err != nil || got.Gen != 0 || got.Change != 6 {
		t.Fatalf("six numbers: %+v %v", got, err)
	}
	for _, bad := range []string{"", "1.2.3.4.5", "1.2.3.4.5.6.7.8", "1.2.3.4.5.x", "1.2.3.4.5.6.-1"} {
		if _, err := ParsePeerParam(bad); err == nil {
			t.Fatalf("ParsePeerParam(%q) accepted", bad)
		}
	}
}
