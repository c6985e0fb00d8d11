package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// The environment image is a valid OCI layout whose blobs match their digests, with a payload
// of the asked size that differs from one seed to the next.
func TestEnvImage(t *testing.T) {
	layerOf := func(seed uint64) (string, int64) {
		t.Helper()
		var buf bytes.Buffer
		if err := writeEnvImage(context.Background(), &buf, t.TempDir(), []byte("#!busybox"), 1<<20+123, seed, nil); err != nil {
			t.Fatal(err)
		}
		blobs := map[string][]byte{}
		var index []byte
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			switch {
			case h.Name == "index.json":
				index = b
			case len(h.Name) > len("blobs/sha256/"):
				sum := sha256.Sum256(b)
				if d := h.Name[len("blobs/sha256/"):]; d != hex.EncodeToString(sum[:]) {
					t.Fatalf("blob %s has digest %x", d, sum)
				}
				blobs["sha256:"+h.Name[len("blobs/sha256/"):]] = b
			}
		}
		var idx struct {
			Manifests []struct{ Digest string } `json:"manifests"`
		}
		if err := json.Unmarshal(index, &idx); err != nil || len(idx.Manifests) != 1 {
			t.Fatalf("index.json %s: %v", index, err)
		}
		var m struct {
			Config struct{ Digest string } `json:"config"`
			Layers []struct {
				Digest string `json:"digest"`
				Size   int64  `json:"size"`
			} `json:"layers"`
		}
		if err := json.Unmarshal(blobs[idx.Manifests[0].Digest], &m); err != nil || len(m.Layers) != 1 || blobs[m.Config.Digest] == nil {
			t.Fatalf("manifest: %+v %v", m, err)
		}
		layer := blobs[m.Layers[0].Digest]
		if int64(len(layer)) != m.Layers[0].Size {
			t.Fatalf("layer size %d, manifest says %d", len(layer), m.Layers[0].Size)
		}
		lr := tar.NewReader(bytes.NewReader(layer))
		var payload int64 = -1
		for {
			h, err := lr.Next()
			if err != nil {
				break
			}
			if h.Name == "payload.bin" {
				payload = h.Size
			}
		}
		if payload != 1<<20+123 {
			t.Fatalf("payload %d bytes", payload)
		}
		return m.Layers[0].Digest, payload
	}
	a, _ := layerOf(1)
	b, _ := layerOf(2)
	a2, _ := layerOf(1)
	if a == b || a != a2 {
		t.Fatalf("layer digests: seed 1 %s, seed 2 %s, seed 1 again %s", a, b, a2)
	}
}
