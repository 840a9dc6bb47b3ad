package strata

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "strata.io/sdk/go/pluginv1"
)

func node(id uint32, health string) *pb.Node {
	return &pb.Node{Id: id, Annotations: map[string]string{"vendor.example.com/health": health}}
}

func TestDeltasResyncAndUnknownSessions(t *testing.T) {
	s := NewServer(vendorRule())
	ctx := context.Background()
	all := &pb.NodeSet{Runs: []uint32{0, 3}}
	// An unknown session (this process restarted): resync.
	r, _ := s.Filter(ctx, &pb.FilterRequest{Delta: &pb.SnapshotDelta{Session: 9, BaseVersion: 4, Version: 4}, Candidates: all})
	if !r.GetResync() {
		t.Fatal("unknown session must ask for a resync")
	}
	if _, err := s.Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1, Session: 9}); err != nil {
		t.Fatal(err)
	}
	full := &pb.SnapshotDelta{Session: 9, Version: 1, Full: true, Nodes: []*pb.Node{node(0, "ok"), node(1, "ok"), node(2, "failed")}}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: full, Candidates: all})
	if r.GetResync() || len(r.GetRejections()) != 1 || r.GetRejections()[0].GetNodeIds()[0] != 2 {
		t.Fatalf("full: %v", r)
	}
	// Node 0 fails, node 2 is removed.
	delta := &pb.SnapshotDelta{Session: 9, BaseVersion: 1, Version: 2, Nodes: []*pb.Node{node(0, "failed")}, RemovedNodes: []uint32{2}}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: delta, Candidates: &pb.NodeSet{Runs: []uint32{0, 2}}})
	if len(r.GetRejections()) != 1 || r.GetRejections()[0].GetNodeIds()[0] != 0 {
		t.Fatalf("delta: %v", r)
	}
	// A delta against a version this side does not hold: resync.
	stale := &pb.SnapshotDelta{Session: 9, BaseVersion: 1, Version: 3, Nodes: []*pb.Node{node(1, "failed")}}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: stale, Candidates: all})
	if !r.GetResync() {
		t.Fatalf("stale base must ask for a resync: %v", r)
	}
	// A candidate the view does not hold: resync rather than a guess.
	idle := &pb.SnapshotDelta{Session: 9, BaseVersion: 2, Version: 2}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: idle, Candidates: &pb.NodeSet{Runs: []uint32{2, 1}}})
	if !r.GetResync() {
		t.Fatalf("unknown node must ask for a resync: %v", r)
	}
}

func TestScoresAreRunLengthEncodedAndClamped(t *testing.T) {
	s := NewServer(&Plugin{Score: func(_ *pb.Pod, n *pb.Node) int64 { return int64(n.GetId()) * 60 }})
	ctx := context.Background()
	_, _ = s.Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1, Session: 1})
	full := &pb.SnapshotDelta{Session: 1, Version: 1, Full: true, Nodes: []*pb.Node{{Id: 0}, {Id: 1}, {Id: 2}, {Id: 3}}}
	r, _ := s.Score(ctx, &pb.ScoreRequest{Delta: full, Nodes: &pb.NodeSet{Runs: []uint32{0, 4}}})
	want := []struct{ score, count int64 }{{0, 1}, {60, 1}, {100, 2}}
	if len(r.GetRuns()) != len(want) {
		t.Fatalf("runs: %v", r.GetRuns())
	}
	for i, w := range want {
		if r.GetRuns()[i].GetScore() != w.score || int64(r.GetRuns()[i].GetCount()) != w.count {
			t.Fatalf("run %d: %v", i, r.GetRuns()[i])
		}
	}
}

func TestMalformedNodeSetsAreRefused(t *testing.T) {
	for _, runs := range [][]uint32{{1}, {5, 2, 4, 1}, {0, 10}} {
		if _, err := Expand(&pb.NodeSet{Runs: runs}, 5); err == nil {
			t.Fatalf("%v accepted", runs)
		}
	}
}

func TestHandshakeRefusesBadConfigAndOtherVersions(t *testing.T) {
	s := NewServer(&Plugin{Configure: func(string, json.RawMessage) error { return errBad }})
	r, _ := s.Handshake(context.Background(), &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1})
	if r.GetError() == "" {
		t.Fatal("configuration error not reported")
	}
	r, _ = s.Handshake(context.Background(), &pb.HandshakeRequest{ProtocolVersion: 7})
	if r.GetError() == "" {
		t.Fatal("version 7 accepted")
	}
}

type bad struct{}

func (bad) Error() string { return "degradedScore: must be within 0..=100" }

var errBad = bad{}

func TestNodeLocalAnswersAreReusedUntilTheNodeChanges(t *testing.T) {
	calls := 0
	p := vendorRule()
	inner := p.Filter
	p.Filter = func(pod *pb.Pod, n *pb.Node) string { calls++; return inner(pod, n) }
	p.NodeLocal = true
	s := NewServer(p)
	ctx := context.Background()
	_, _ = s.Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1, Session: 1})
	pod := &pb.Pod{Name: "a", Labels: map[string]string{"app": "web"}}
	all := &pb.NodeSet{Runs: []uint32{0, 3}}
	full := &pb.SnapshotDelta{Session: 1, Version: 1, Full: true, Nodes: []*pb.Node{node(0, "ok"), node(1, "ok"), node(2, "failed")}}
	r, _ := s.Filter(ctx, &pb.FilterRequest{Delta: full, Pod: pod, Candidates: all})
	if calls != 3 || len(r.GetRejections()) != 1 {
		t.Fatalf("first: %d calls, %v", calls, r)
	}
	// Another pod of the same kind, nothing changed: no call.
	other := &pb.Pod{Name: "b", Uid: "u-b", Labels: map[string]string{"app": "web"}}
	idle := &pb.SnapshotDelta{Session: 1, BaseVersion: 1, Version: 1}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: idle, Pod: other, Candidates: all})
	if calls != 3 || len(r.GetRejections()) != 1 || r.GetRejections()[0].GetNodeIds()[0] != 2 {
		t.Fatalf("idle: %d calls, %v", calls, r)
	}
	// Node 1 fails: only it is judged again.
	delta := &pb.SnapshotDelta{Session: 1, BaseVersion: 1, Version: 2, Nodes: []*pb.Node{node(1, "failed")}}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: delta, Pod: other, Candidates: all})
	if calls != 4 || len(r.GetRejections()[0].GetNodeIds()) != 2 {
		t.Fatalf("delta: %d calls, %v", calls, r)
	}
	// A pod of another kind is judged on its own.
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: &pb.SnapshotDelta{Session: 1, BaseVersion: 2, Version: 2}, Pod: &pb.Pod{Name: "c"}, Candidates: all})
	if calls != 7 || len(r.GetRejections()[0].GetNodeIds()) != 2 {
		t.Fatalf("other kind: %d calls, %v", calls, r)
	}
	// Removed node: a candidate it no longer knows asks for a resync.
	gone := &pb.SnapshotDelta{Session: 1, BaseVersion: 2, Version: 3, RemovedNodes: []uint32{0}}
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: gone, Pod: other, Candidates: all})
	if !r.GetResync() {
		t.Fatalf("removed node judged from the memo: %v", r)
	}
}

// A node-local plugin asked for scores with Filter scores exactly the
// candidates that pass, as a Score call would, from the same memo.
func TestScoresWithFilterCoverThePassingCandidates(t *testing.T) {
	scored := 0
	p := vendorRule()
	inner := p.Score
	p.Score = func(pod *pb.Pod, n *pb.Node) int64 { scored++; return inner(pod, n) }
	p.NodeLocal = true
	s := NewServer(p)
	ctx := context.Background()
	h, _ := s.Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1, Session: 1})
	if !h.GetScoresWithFilter() {
		t.Fatal("a plugin with Filter and Score must offer scores with Filter")
	}
	pod := &pb.Pod{Name: "a", Labels: map[string]string{"app": "web"}}
	all := &pb.NodeSet{Runs: []uint32{0, 4}}
	full := &pb.SnapshotDelta{Session: 1, Version: 1, Full: true, Nodes: []*pb.Node{node(0, "ok"), node(1, "degraded"), node(2, "failed"), node(3, "ok")}}
	r, _ := s.Filter(ctx, &pb.FilterRequest{Delta: full, Pod: pod, Candidates: all, WithScores: true})
	want := []struct{ score, count int64 }{{100, 1}, {20, 1}, {100, 1}}
	runs := r.GetScores().GetRuns()
	if len(runs) != len(want) || scored != 3 || r.GetScores().GetStatus().GetCode() != pb.Code_CODE_SUCCESS {
		t.Fatalf("scores: %d scored, %v", scored, r)
	}
	for i, w := range want {
		if runs[i].GetScore() != w.score || int64(runs[i].GetCount()) != w.count {
			t.Fatalf("run %d: %v", i, runs[i])
		}
	}
	// A Score call for the same pod kind reads the memo.
	idle := &pb.SnapshotDelta{Session: 1, BaseVersion: 1, Version: 1}
	sr, _ := s.Score(ctx, &pb.ScoreRequest{Delta: idle, Pod: pod, Nodes: &pb.NodeSet{Runs: []uint32{0, 2, 3, 1}}})
	if scored != 3 || len(sr.GetRuns()) != 3 {
		t.Fatalf("score after filter: %d scored, %v", scored, sr)
	}
	// Without with_scores, no scores.
	r, _ = s.Filter(ctx, &pb.FilterRequest{Delta: idle, Pod: pod, Candidates: all})
	if r.GetScores() != nil {
		t.Fatalf("unasked scores: %v", r)
	}
	// A plugin without Score does not offer them.
	h, _ = NewServer(&Plugin{Filter: p.Filter}).Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1, Session: 2})
	if h.GetScoresWithFilter() {
		t.Fatal("a plugin without Score offers scores")
	}
}

// A PermitWait hold answers CODE_WAIT (capped at MaxPermitWait), and Allow
// and Reject reach a scheduler's PermitDecisions stream over real gRPC.
func TestPermitWaitAndDecisionsOverGRPC(t *testing.T) {
	s := NewServer(&Plugin{
		PermitWait: func(_ context.Context, pod *pb.Pod, _ string) time.Duration {
			if pod.GetLabels()["hold"] == "long" {
				return time.Hour
			}
			return 1500 * time.Millisecond
		},
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterRemotePluginServer(g, s)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewRemotePluginClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Permit(ctx, &pb.PodOnNode{Pod: &pb.Pod{Uid: "u1"}, NodeName: "n"})
	if err != nil || r.GetCode() != pb.Code_CODE_WAIT || r.GetWaitMillis() != 1500 {
		t.Fatalf("hold: %v %v", r, err)
	}
	r, _ = c.Permit(ctx, &pb.PodOnNode{Pod: &pb.Pod{Uid: "u2", Labels: map[string]string{"hold": "long"}}})
	if r.GetWaitMillis() != uint64(MaxPermitWait.Milliseconds()) {
		t.Fatalf("capped: %v", r)
	}
	if n := s.Allow("u0"); n != 0 {
		t.Fatalf("no stream yet, sent on %d", n)
	}
	stream, err := c.PermitDecisions(ctx, &pb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the server to register the stream.
	for i := 0; i < 500; i++ {
		if s.Allow("probe") > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Allow("u1")
	s.Reject("u2", "quota exhausted")
	var got []*pb.PermitDecision
	for len(got) < 2 {
		d, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if d.GetPodUid() != "probe" {
			got = append(got, d)
		}
	}
	if !got[0].GetAllow() || got[0].GetPodUid() != "u1" || got[1].GetAllow() || got[1].GetReason() != "quota exhausted" {
		t.Fatalf("decisions: %v", got)
	}
}
