// Package strata is the Go SDK of Strata's out-of-process plugin protocol
// (strata.plugin.v1, proto/strata/plugin/v1/plugin.proto): a vendor writes
// a Filter or a Score as a plain function of a pod and a node, and Serve
// runs the gRPC server the scheduler calls.
//
// The SDK keeps the plugin's view of the cluster: the scheduler sends a full
// snapshot at the start of a session and then only the nodes that changed,
// and the SDK applies them, answers `resync` when it cannot (after a restart
// of this process, or a delta it did not expect), and hands each function
// the current node. Filter and Score are called once per candidate node
// inside one batched request per scheduling cycle.
//
// Import it as
//
//	import strata "strata.io/sdk/go"
//
// The module path strata.io/sdk/go is the name this module has in the
// Strata repository (sdk/go); outside it, point a replace directive at a
// checkout.
package strata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "strata.io/sdk/go/pluginv1"
)

// MaxNodeScore is the highest score; Score results are clamped to
// 0..MaxNodeScore.
const MaxNodeScore = 100

// Plugin is a remote plugin: the functions it sets are the extension points
// it serves. All functions may be called concurrently for different pods.
type Plugin struct {
	// Configure receives the profile name and the plugin's pluginConfig
	// args (JSON, without the scheduler's own `remote` settings) at each
	// handshake. An error refuses the configuration: the scheduler reports
	// it and does not use the plugin.
	Configure func(profile string, args json.RawMessage) error
	// Filter judges one candidate node: "" lets the pod run there, any
	// other string rejects the node with that reason.
	Filter func(pod *pb.Pod, node *pb.Node) string
	// Score scores one feasible node, 0..MaxNodeScore (higher is better).
	Score func(pod *pb.Pod, node *pb.Node) int64
	// Reserve is told the node chosen for the pod; an error rejects it.
	Reserve func(ctx context.Context, pod *pb.Pod, node string) error
	// Unreserve undoes Reserve when a later phase failed. Idempotent.
	Unreserve func(ctx context.Context, pod *pb.Pod, node string)
	// Permit: "" allows the pod, any other string rejects it.
	Permit func(ctx context.Context, pod *pb.Pod, node string) string
	// PermitWait, when set, is asked first at Permit: a positive duration
	// holds the pod (assumed on the node, not bound) that long, at most
	// MaxPermitWait; the plugin decides later with Server.Allow or
	// Server.Reject, and a pod with no decision by then is rejected by the
	// scheduler. Zero goes on to Permit.
	PermitWait func(ctx context.Context, pod *pb.Pod, node string) time.Duration
	// PreBind runs before the bind; an error fails the binding attempt.
	PreBind func(ctx context.Context, pod *pb.Pod, node string) error
	// Bind binds the pod itself; bound=false leaves it to the next binder.
	Bind func(ctx context.Context, pod *pb.Pod, node string) (bound bool, err error)
	// PostBind is told of a successful bind.
	PostBind func(ctx context.Context, pod *pb.Pod, node string)
	// NodeLocal declares that Filter and Score depend only on the pod and
	// the node they are given: the scheduler may then reuse an answer for
	// pods of the same template while the node is unchanged. Strata keeps
	// the answers and asks only about nodes that changed since; the
	// server's own memo serves schedulers that ask about every node. With
	// both Filter and Score set, Strata also asks for the scores of the
	// nodes that pass in the Filter call itself (one round trip per cycle
	// instead of two); the SDK answers that on its own.
	NodeLocal bool
	// RequeueOn lists the cluster events after which a pod this plugin
	// rejected is worth retrying. Empty: nodes added or updated.
	RequeueOn []*pb.RequeueEvent
}

// maxSessions bounds the sessions kept (one per scheduler profile using the
// plugin, plus old ones being replaced).
const maxSessions = 64

// View is a session's copy of the scheduler's nodes, by node id.
type View struct {
	Version uint64
	Nodes   map[uint32]*pb.Node
	seq     uint64
	// gen[id] changes whenever node id does (0: never seen); memos of
	// node-local answers are valid while it holds.
	gen   []uint64
	tick  uint64
	memos map[uint64]*memo
}

// memo holds a node-local plugin's answers for one kind of pod.
type memo struct {
	filterGen []uint64
	verdict   []int32 // 0 passes, k rejects with reasons[k-1]
	scoreGen  []uint64
	score     []int64
	reasons   []string
	reasonIdx map[string]int32
}

// maxMemos bounds the kinds of pods remembered per session.
const maxMemos = 32

func (v *View) touch(id uint32) {
	if int(id) >= len(v.gen) {
		v.gen = append(v.gen, make([]uint64, int(id)+1-len(v.gen))...)
	}
	v.tick++
	v.gen[id] = v.tick
}

// Apply brings the view to d.Version; false when d does not apply (its
// base is not the view's version), which the scheduler answers with a full
// snapshot.
func (v *View) Apply(d *pb.SnapshotDelta) bool {
	if d.GetFull() {
		v.Nodes = make(map[uint32]*pb.Node, len(d.GetNodes()))
		v.gen = nil
		v.memos = nil
	} else if d.GetBaseVersion() != v.Version {
		return false
	}
	for _, n := range d.GetNodes() {
		v.Nodes[n.GetId()] = n
		v.touch(n.GetId())
	}
	for _, id := range d.GetRemovedNodes() {
		delete(v.Nodes, id)
		v.touch(id)
	}
	v.Version = d.GetVersion()
	return true
}

// memoFor returns the memo of pods like p: everything of the pod but its
// identity (uid, name) is its key.
func (v *View) memoFor(p *pb.Pod) *memo {
	key := podKey(p)
	if m, ok := v.memos[key]; ok {
		return m
	}
	if v.memos == nil || len(v.memos) >= maxMemos {
		v.memos = map[uint64]*memo{}
	}
	m := &memo{reasonIdx: map[string]int32{}}
	v.memos[key] = m
	return m
}

func podKey(p *pb.Pod) uint64 {
	c := &pb.Pod{
		Namespace:   p.GetNamespace(),
		Labels:      p.GetLabels(),
		Annotations: p.GetAnnotations(),
		Priority:    p.GetPriority(),
		Requests:    p.GetRequests(),
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

func grow[T any](s []T, n int) []T {
	if len(s) < n {
		s = append(s, make([]T, n-len(s))...)
	}
	return s
}

// Expand returns the node ids of a run-encoded set, refusing malformed runs
// and more than limit ids.
func Expand(s *pb.NodeSet, limit int) ([]uint32, error) {
	runs := s.GetRuns()
	if len(runs)%2 != 0 {
		return nil, fmt.Errorf("node set: %d values, not (first, count) pairs", len(runs))
	}
	var out []uint32
	var next uint64
	for i := 0; i < len(runs); i += 2 {
		first, count := uint64(runs[i]), uint64(runs[i+1])
		if first < next {
			return nil, fmt.Errorf("node set: run %d is not ascending", i/2)
		}
		end := first + count
		if end > 1<<32 || uint64(len(out))+count > uint64(limit) {
			return nil, fmt.Errorf("node set: more than %d nodes", limit)
		}
		for id := first; id < end; id++ {
			out = append(out, uint32(id))
		}
		next = end
	}
	return out, nil
}

// Server is the gRPC service over a Plugin; register it on a grpc.Server
// of your own, or let Serve do it.
type Server struct {
	pb.UnimplementedRemotePluginServer
	p        *Plugin
	mu       sync.Mutex
	sessions map[uint64]*View
	seq      uint64
	// Open PermitDecisions streams.
	deciders map[chan *pb.PermitDecision]struct{}
}

// MaxPermitWait is the longest a pod may be held at Permit
// (kube-scheduler's cap).
const MaxPermitWait = 15 * time.Minute

// decisionBuffer is how many decisions may queue on one stream before
// Allow and Reject drop them for that stream.
const decisionBuffer = 4096

// NewServer wraps p.
func NewServer(p *Plugin) *Server {
	return &Server{p: p, sessions: map[uint64]*View{}, deciders: map[chan *pb.PermitDecision]struct{}{}}
}

// Allow lets a pod held by PermitWait go on to bind. It returns how many
// scheduler streams it was sent on (0: no scheduler is listening yet; the
// pod's wait will run out).
func (s *Server) Allow(podUID string) int {
	return s.decide(&pb.PermitDecision{PodUid: podUID, Allow: true})
}

// Reject refuses a pod held by PermitWait, with a reason for a person.
func (s *Server) Reject(podUID, reason string) int {
	return s.decide(&pb.PermitDecision{PodUid: podUID, Reason: reason})
}

func (s *Server) decide(d *pb.PermitDecision) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ch := range s.deciders {
		select {
		case ch <- d:
			n++
		default:
		}
	}
	return n
}

// PermitDecisions streams Allow and Reject to a scheduler until it goes.
func (s *Server) PermitDecisions(_ *pb.Empty, stream grpc.ServerStreamingServer[pb.PermitDecision]) error {
	ch := make(chan *pb.PermitDecision, decisionBuffer)
	s.mu.Lock()
	s.deciders[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.deciders, ch)
		s.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case d := <-ch:
			if err := stream.Send(d); err != nil {
				return err
			}
		}
	}
}

func (s *Server) points() []pb.ExtensionPoint {
	var pts []pb.ExtensionPoint
	add := func(set bool, p pb.ExtensionPoint) {
		if set {
			pts = append(pts, p)
		}
	}
	add(s.p.Filter != nil, pb.ExtensionPoint_EXTENSION_POINT_FILTER)
	add(s.p.Score != nil, pb.ExtensionPoint_EXTENSION_POINT_SCORE)
	add(s.p.Reserve != nil || s.p.Unreserve != nil, pb.ExtensionPoint_EXTENSION_POINT_RESERVE)
	add(s.p.Permit != nil || s.p.PermitWait != nil, pb.ExtensionPoint_EXTENSION_POINT_PERMIT)
	add(s.p.PreBind != nil, pb.ExtensionPoint_EXTENSION_POINT_PRE_BIND)
	add(s.p.Bind != nil, pb.ExtensionPoint_EXTENSION_POINT_BIND)
	add(s.p.PostBind != nil, pb.ExtensionPoint_EXTENSION_POINT_POST_BIND)
	return pts
}

// Handshake opens a session.
func (s *Server) Handshake(_ context.Context, r *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	resp := &pb.HandshakeResponse{ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1}
	if r.GetProtocolVersion() != pb.ProtocolVersion_PROTOCOL_VERSION_1 {
		resp.Error = fmt.Sprintf("protocol version %d is not supported (1 is)", r.GetProtocolVersion())
		return resp, nil
	}
	if s.p.Configure != nil {
		if err := s.p.Configure(r.GetProfile(), json.RawMessage(r.GetPluginConfigJson())); err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
	}
	resp.ExtensionPoints = s.points()
	resp.NodeLocal = s.p.NodeLocal
	resp.ScoresWithFilter = s.p.Filter != nil && s.p.Score != nil
	resp.RequeueEvents = s.p.RequeueOn
	if len(resp.RequeueEvents) == 0 {
		resp.RequeueEvents = []*pb.RequeueEvent{{
			Resource: pb.EventResource_EVENT_RESOURCE_NODE,
			Actions:  []pb.EventAction{pb.EventAction_EVENT_ACTION_ADD, pb.EventAction_EVENT_ACTION_UPDATE},
		}}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.sessions[r.GetSession()] = &View{Nodes: map[uint32]*pb.Node{}, seq: s.seq}
	if len(s.sessions) > maxSessions {
		var oldest uint64
		var min uint64 = ^uint64(0)
		for id, v := range s.sessions {
			if v.seq < min {
				oldest, min = id, v.seq
			}
		}
		delete(s.sessions, oldest)
	}
	return resp, nil
}

// sync applies the request's delta and returns the view, or nil (resync).
// Holds s.mu on success; the caller unlocks.
func (s *Server) sync(d *pb.SnapshotDelta) *View {
	s.mu.Lock()
	v, ok := s.sessions[d.GetSession()]
	if !ok || !v.Apply(d) {
		s.mu.Unlock()
		return nil
	}
	return v
}

// maxNodes bounds a request's node set.
const maxNodes = 1 << 22

// Filter judges every candidate of one cycle.
func (s *Server) Filter(_ context.Context, r *pb.FilterRequest) (*pb.FilterResponse, error) {
	if s.p.Filter == nil {
		return &pb.FilterResponse{Status: &pb.Result{Code: pb.Code_CODE_SKIP}}, nil
	}
	v := s.sync(r.GetDelta())
	if v == nil {
		return &pb.FilterResponse{Resync: true}, nil
	}
	defer s.mu.Unlock()
	ids, err := Expand(r.GetCandidates(), maxNodes)
	if err != nil {
		return &pb.FilterResponse{Status: &pb.Result{Code: pb.Code_CODE_ERROR, Reason: err.Error()}}, nil
	}
	byReason := map[string][]uint32{}
	withScores := r.GetWithScores() && s.p.Score != nil
	var passed []uint32
	var m *memo
	if s.p.NodeLocal {
		m = v.memoFor(r.GetPod())
		m.filterGen = grow(m.filterGen, len(v.gen))
		m.verdict = grow(m.verdict, len(v.gen))
	}
	for _, id := range ids {
		if m != nil && int(id) < len(v.gen) && v.gen[id] != 0 && m.filterGen[id] == v.gen[id] {
			if k := m.verdict[id]; k > 0 {
				reason := m.reasons[k-1]
				byReason[reason] = append(byReason[reason], id)
			} else if withScores {
				passed = append(passed, id)
			}
			continue
		}
		n, ok := v.Nodes[id]
		if !ok {
			// Not in the view: answer a resync rather than guess.
			return &pb.FilterResponse{Resync: true}, nil
		}
		if m == nil {
			if reason := s.p.Filter(r.GetPod(), n); reason != "" {
				byReason[reason] = append(byReason[reason], id)
			} else if withScores {
				passed = append(passed, id)
			}
			continue
		}
		{
			k := int32(0)
			if reason := s.p.Filter(r.GetPod(), n); reason != "" {
				var ok bool
				if k, ok = m.reasonIdx[reason]; !ok {
					m.reasons = append(m.reasons, reason)
					k = int32(len(m.reasons))
					m.reasonIdx[reason] = k
				}
			}
			m.verdict[id], m.filterGen[id] = k, v.gen[id]
		}
		if k := m.verdict[id]; k > 0 {
			reason := m.reasons[k-1]
			byReason[reason] = append(byReason[reason], id)
		} else if withScores {
			passed = append(passed, id)
		}
	}
	reasons := make([]string, 0, len(byReason))
	for k := range byReason {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	resp := &pb.FilterResponse{Status: &pb.Result{}}
	for _, k := range reasons {
		resp.Rejections = append(resp.Rejections, &pb.Rejection{
			Code: pb.Code_CODE_UNSCHEDULABLE, Reason: k, NodeIds: byReason[k],
		})
	}
	if withScores {
		runs, ok := s.scoreRuns(v, r.GetPod(), passed)
		if !ok {
			return &pb.FilterResponse{Resync: true}, nil
		}
		resp.Scores = &pb.FilterScores{Status: &pb.Result{}, Runs: runs}
	}
	return resp, nil
}

// scoreRuns scores ids (in the view v, s.mu held) and encodes the scores
// as runs in that order; false when a node is not in the view.
func (s *Server) scoreRuns(v *View, pod *pb.Pod, ids []uint32) ([]*pb.ScoreRun, bool) {
	var runs []*pb.ScoreRun
	var last *pb.ScoreRun
	var m *memo
	if s.p.NodeLocal {
		m = v.memoFor(pod)
		m.scoreGen = grow(m.scoreGen, len(v.gen))
		m.score = grow(m.score, len(v.gen))
	}
	for _, id := range ids {
		var sc int64
		if m != nil && int(id) < len(v.gen) && m.scoreGen[id] == v.gen[id] && v.gen[id] != 0 {
			sc = m.score[id]
		} else {
			n, ok := v.Nodes[id]
			if !ok {
				return nil, false
			}
			sc = min(max(s.p.Score(pod, n), 0), MaxNodeScore)
			if m != nil && int(id) < len(v.gen) {
				m.score[id], m.scoreGen[id] = sc, v.gen[id]
			}
		}
		if last != nil && last.Score == sc {
			last.Count++
			continue
		}
		last = &pb.ScoreRun{Score: sc, Count: 1}
		runs = append(runs, last)
	}
	return runs, true
}

// Score scores every feasible node of one cycle.
func (s *Server) Score(_ context.Context, r *pb.ScoreRequest) (*pb.ScoreResponse, error) {
	if s.p.Score == nil {
		return &pb.ScoreResponse{Status: &pb.Result{Code: pb.Code_CODE_SKIP}}, nil
	}
	v := s.sync(r.GetDelta())
	if v == nil {
		return &pb.ScoreResponse{Resync: true}, nil
	}
	defer s.mu.Unlock()
	ids, err := Expand(r.GetNodes(), maxNodes)
	if err != nil {
		return &pb.ScoreResponse{Status: &pb.Result{Code: pb.Code_CODE_ERROR, Reason: err.Error()}}, nil
	}
	runs, ok := s.scoreRuns(v, r.GetPod(), ids)
	if !ok {
		return &pb.ScoreResponse{Resync: true}, nil
	}
	return &pb.ScoreResponse{Status: &pb.Result{}, Runs: runs}, nil
}

func reject(code pb.Code, reason string) *pb.Result {
	return &pb.Result{Code: code, Reason: reason}
}

// Reserve calls Plugin.Reserve.
func (s *Server) Reserve(ctx context.Context, r *pb.PodOnNode) (*pb.Result, error) {
	if s.p.Reserve != nil {
		if err := s.p.Reserve(ctx, r.GetPod(), r.GetNodeName()); err != nil {
			return reject(pb.Code_CODE_UNSCHEDULABLE, err.Error()), nil
		}
	}
	return &pb.Result{}, nil
}

// Unreserve calls Plugin.Unreserve.
func (s *Server) Unreserve(ctx context.Context, r *pb.PodOnNode) (*pb.Empty, error) {
	if s.p.Unreserve != nil {
		s.p.Unreserve(ctx, r.GetPod(), r.GetNodeName())
	}
	return &pb.Empty{}, nil
}

// Permit calls Plugin.Permit.
func (s *Server) Permit(ctx context.Context, r *pb.PodOnNode) (*pb.Result, error) {
	if s.p.PermitWait != nil {
		if d := s.p.PermitWait(ctx, r.GetPod(), r.GetNodeName()); d > 0 {
			if d > MaxPermitWait {
				d = MaxPermitWait
			}
			ms := d.Milliseconds()
			if ms < 1 {
				ms = 1
			}
			return &pb.Result{Code: pb.Code_CODE_WAIT, WaitMillis: uint64(ms)}, nil
		}
	}
	if s.p.Permit != nil {
		if reason := s.p.Permit(ctx, r.GetPod(), r.GetNodeName()); reason != "" {
			return reject(pb.Code_CODE_UNSCHEDULABLE, reason), nil
		}
	}
	return &pb.Result{}, nil
}

// PreBind calls Plugin.PreBind.
func (s *Server) PreBind(ctx context.Context, r *pb.PodOnNode) (*pb.Result, error) {
	if s.p.PreBind != nil {
		if err := s.p.PreBind(ctx, r.GetPod(), r.GetNodeName()); err != nil {
			return reject(pb.Code_CODE_ERROR, err.Error()), nil
		}
	}
	return &pb.Result{}, nil
}

// Bind calls Plugin.Bind.
func (s *Server) Bind(ctx context.Context, r *pb.PodOnNode) (*pb.Result, error) {
	if s.p.Bind == nil {
		return &pb.Result{Code: pb.Code_CODE_SKIP}, nil
	}
	bound, err := s.p.Bind(ctx, r.GetPod(), r.GetNodeName())
	switch {
	case err != nil:
		return reject(pb.Code_CODE_ERROR, err.Error()), nil
	case !bound:
		return &pb.Result{Code: pb.Code_CODE_SKIP}, nil
	}
	return &pb.Result{}, nil
}

// PostBind calls Plugin.PostBind.
func (s *Server) PostBind(ctx context.Context, r *pb.PodOnNode) (*pb.Empty, error) {
	if s.p.PostBind != nil {
		s.p.PostBind(ctx, r.GetPod(), r.GetNodeName())
	}
	return &pb.Empty{}, nil
}

// Listen opens "unix:///path" (a stale socket file is removed first),
// "unix:/path", or "host:port" (TCP).
func Listen(address string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(address, "unix://"); ok {
		address = "unix:" + path
	}
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("%q: a Unix socket path must be absolute", address)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", strings.TrimPrefix(address, "http://"))
}

// Serve serves p on address until ctx is done.
func Serve(ctx context.Context, address string, p *Plugin) error {
	lis, err := Listen(address)
	if err != nil {
		return err
	}
	// A full snapshot of a large cluster is one message.
	g := grpc.NewServer(grpc.MaxRecvMsgSize(512 << 20))
	pb.RegisterRemotePluginServer(g, NewServer(p))
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	return g.Serve(lis)
}
