package bench

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestS3BackendsKnownNotDefault(t *testing.T) {
	for _, b := range strings.Split(S3Backends, ",") {
		if !slices.Contains(KnownBackends(), b) {
			t.Errorf("%s not in KnownBackends", b)
		}
		if slices.Contains(AllBackends(), b) {
			t.Errorf("%s is in the default list", b)
		}
		if !IsS3Backend(b) || !Proxied(b) {
			t.Errorf("%s: IsS3Backend %v, Proxied %v", b, IsS3Backend(b), Proxied(b))
		}
		if backendLabels[b] == "" || backendColor[b] == [2]string{} {
			t.Errorf("%s has no label or colour", b)
		}
	}
	if IsS3Backend(BNFS) {
		t.Error("nfs is not an S3 backend")
	}
}

func TestS3NewBackends(t *testing.T) {
	e := &env{cfg: &Config{}, work: t.TempDir()}
	for _, n := range []string{BS3FS, BRclone, BEddyS3} {
		b, err := newBackend(e, n)
		if err != nil {
			t.Fatal(err)
		}
		if b.name() != n {
			t.Errorf("name %q, want %q", b.name(), n)
		}
	}
	eb, _ := newBackend(e, BEddyS3)
	for _, kv := range eb.(*eddyBackend).denv {
		if !strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") && !strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") {
			t.Errorf("unexpected daemon environment %q", kv)
		}
	}
	// Without a topology the gateway cannot start: every S3 backend says so.
	for _, n := range []string{BS3FS, BEddyS3} {
		b, _ := newBackend(e, n)
		if _, err := b.prepare(context.Background(), true); err == nil || !strings.Contains(err.Error(), "topology") {
			t.Errorf("%s prepare without topology: %v", n, err)
		}
	}
}

func TestS3OriginURL(t *testing.T) {
	ep := "http://10.78.0.1:7070"
	o := "s3://" + s3Bucket + "?endpoint=" + url.QueryEscape(ep) + "&path_style=1"
	u, err := url.Parse(o)
	if err != nil {
		t.Fatal(err)
	}
	if u.Host != s3Bucket || u.Query().Get("endpoint") != ep || u.Query().Get("path_style") != "1" {
		t.Errorf("origin %q parses as %+v", o, u)
	}
}

func TestFindVersityGWBesideBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	root := t.TempDir()
	bin := filepath.Join(root, ".tools", "versitygw", "bin", "versitygw")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(bin), ".version"), []byte("v9.9.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	got := FindVersityGW(filepath.Join(root, "bin", "eddy"))
	if got != bin {
		t.Errorf("FindVersityGW = %q, want %q", got, bin)
	}
	if v := versityGWVersion(got); !strings.HasPrefix(v, "v9.9.9 ") {
		t.Errorf("version %q", v)
	}
}
