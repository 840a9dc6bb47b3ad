package strata

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "strata.io/sdk/go/pluginv1"
)

// The shared vectors of proto/testdata, written by the Rust side
// (remote/tests/vectors.rs): this side must decode them to the same
// fields, encode them to the same bytes, and answer the Filter request
// with filter_response.binpb exactly.

func vector(t *testing.T, name string, m proto.Message) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "proto", "testdata", name+".binpb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	again, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("%s: re-encoded to different bytes:\n%x\n%x", name, again, b)
	}
	return b
}

const session = 0x0123456789abcdef

func vendorRule() *Plugin {
	return &Plugin{
		Filter: func(_ *pb.Pod, n *pb.Node) string {
			if n.GetAnnotations()["vendor.example.com/health"] == "failed" {
				return "node(s) reported failed by the vendor agent"
			}
			return ""
		},
		Score: func(_ *pb.Pod, n *pb.Node) int64 {
			if n.GetAnnotations()["vendor.example.com/health"] == "ok" {
				return 100
			}
			return 20
		},
	}
}

func TestVectorsDecodeAndAnswer(t *testing.T) {
	var h pb.HandshakeRequest
	vector(t, "handshake_request", &h)
	if h.GetSession() != session || h.GetPluginConfigJson() != `{"degradedScore":20}` || h.GetProfile() != "default-scheduler" {
		t.Fatalf("handshake: %v", &h)
	}
	var full pb.FilterRequest
	vector(t, "filter_request_full", &full)
	d := full.GetDelta()
	if !d.GetFull() || d.GetVersion() != 1 || len(d.GetNodes()) != 2 {
		t.Fatalf("delta: %v", d)
	}
	if got := d.GetNodes()[0].GetPods()[0].GetRequests()["cpu"]; got != 500 {
		t.Fatalf("pod requests: %d", got)
	}
	if full.GetPod().GetRequests()["cpu"] != 1000 || full.GetPod().GetPriority() != 5 {
		t.Fatalf("pod: %v", full.GetPod())
	}
	ids, err := Expand(full.GetCandidates(), 10)
	if err != nil || len(ids) != 2 || ids[0] != 0 || ids[1] != 3 {
		t.Fatalf("candidates %v %v", ids, err)
	}

	s := NewServer(vendorRule())
	ctx := context.Background()
	hresp, err := s.Handshake(ctx, &h)
	if err != nil {
		t.Fatal(err)
	}
	var hwant pb.HandshakeResponse
	hwantBytes := vector(t, "handshake_response", &hwant)
	hgot, _ := proto.MarshalOptions{Deterministic: true}.Marshal(hresp)
	if !bytes.Equal(hgot, hwantBytes) {
		t.Fatalf("handshake answer:\n got %v\nwant %v", hresp, &hwant)
	}
	resp, err := s.Filter(ctx, &full)
	if err != nil {
		t.Fatal(err)
	}
	var want pb.FilterResponse
	wantBytes := vector(t, "filter_response", &want)
	got, _ := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if !bytes.Equal(got, wantBytes) {
		t.Fatalf("filter answer:\n got %v\nwant %v", resp, &want)
	}

	// The idle request applies (no change) and answers the same.
	var idle pb.FilterRequest
	vector(t, "filter_request_idle", &idle)
	resp, _ = s.Filter(ctx, &idle)
	if resp.GetResync() || len(resp.GetRejections()) != 1 {
		t.Fatalf("idle answer: %v", resp)
	}
	var sr pb.ScoreRequest
	vector(t, "score_request", &sr)
	sresp, _ := s.Score(ctx, &sr)
	var swant pb.ScoreResponse
	swantBytes := vector(t, "score_response", &swant)
	sgot, _ := proto.MarshalOptions{Deterministic: true}.Marshal(sresp)
	if !bytes.Equal(sgot, swantBytes) {
		t.Fatalf("score answer:\n got %v\nwant %v", sresp, &swant)
	}

	// A node-local plugin's steady state: one changed node, asked alone.
	var changed pb.FilterRequest
	vector(t, "filter_request_changed", &changed)
	if ids, err := Expand(changed.GetCandidates(), 10); err != nil || len(ids) != 1 || ids[0] != 3 {
		t.Fatalf("changed candidates %v %v", ids, err)
	}
	resp, err = s.Filter(ctx, &changed)
	if err != nil || resp.GetResync() || len(resp.GetRejections()) != 0 || resp.GetStatus().GetCode() != pb.Code_CODE_SUCCESS {
		t.Fatalf("changed answer: %v %v", resp, err)
	}
	if resp.GetScores() != nil {
		t.Fatalf("scores not asked for: %v", resp)
	}

	// Scores with Filter: node 3 failed again; only node 0 passes and is
	// scored.
	var ws pb.FilterRequest
	vector(t, "filter_request_scores", &ws)
	if !ws.GetWithScores() {
		t.Fatal("with_scores not set")
	}
	resp, err = s.Filter(ctx, &ws)
	if err != nil {
		t.Fatal(err)
	}
	var wswant pb.FilterResponse
	wswantBytes := vector(t, "filter_response_scores", &wswant)
	wsgot, _ := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if !bytes.Equal(wsgot, wswantBytes) {
		t.Fatalf("filter answer with scores:\n got %v\nwant %v", resp, &wswant)
	}
}
