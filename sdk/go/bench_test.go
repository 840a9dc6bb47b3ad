package strata

import (
	"context"
	"fmt"
	"testing"

	pb "strata.io/sdk/go/pluginv1"
)

// The plugin side of one cycle at 16,000 nodes with nothing changed: the
// Filter and the Score call of the vendor rule (go test -bench . -run ^$).
func BenchmarkCycle16k(b *testing.B) { benchCycle(b, false) }

// The same for a plugin that declares NodeLocal: answers are reused.
func BenchmarkCycle16kNodeLocal(b *testing.B) { benchCycle(b, true) }

func benchCycle(b *testing.B, nodeLocal bool) {
	const n = 16000
	p := vendorRule()
	p.NodeLocal = nodeLocal
	s := NewServer(p)
	ctx := context.Background()
	_, _ = s.Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1, Session: 1})
	nodes := make([]*pb.Node, n)
	for i := range nodes {
		h := "ok"
		switch i * 16 / n {
		case 14:
			h = "degraded"
		case 15:
			h = "failed"
		}
		nodes[i] = &pb.Node{Id: uint32(i), Name: fmt.Sprintf("n%05d", i), Annotations: map[string]string{"vendor.example.com/health": h}}
	}
	full := &pb.SnapshotDelta{Session: 1, Version: 1, Full: true, Nodes: nodes}
	all := &pb.NodeSet{Runs: []uint32{0, n}}
	if r, _ := s.Filter(ctx, &pb.FilterRequest{Delta: full, Candidates: all}); r.GetResync() {
		b.Fatal("resync")
	}
	idle := &pb.SnapshotDelta{Session: 1, BaseVersion: 1, Version: 1}
	feasible := &pb.NodeSet{Runs: []uint32{0, n * 15 / 16}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = s.Filter(ctx, &pb.FilterRequest{Delta: idle, Candidates: all})
		_, _ = s.Score(ctx, &pb.ScoreRequest{Delta: idle, Nodes: feasible})
	}
}
