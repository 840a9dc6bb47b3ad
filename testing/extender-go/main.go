// Command extender-go is a small kube-scheduler extender written against the upstream
// types of k8s.io/kube-scheduler/extender/v1, exactly as an extender for kube-scheduler
// would be. Strata's tests run it to check that such an extender works unchanged.
//
// Rules (all optional, by flag):
//
//	-reject REGEX        filter: nodes whose name matches fail (FailedNodes)
//	-unresolvable REGEX  filter: nodes whose name matches fail for good (FailedAndUnresolvableNodes)
//	-prefer REGEX        prioritize: matching nodes score 10, the others 0
//	-error-pods REGEX    filter and prioritize: pods whose name matches get an Error answer
//	-no-preempt REGEX    preempt: candidate nodes whose name matches are dropped
//	-spare-pods REGEX    preempt: victims whose name matches are spared; a node left with
//	                     no victim is dropped
//	-kubeconfig FILE     bind: bind through this API server (without it, bind only records)
//
// It listens on -listen (default 127.0.0.1:0), prints "listening on ADDR" on its first
// stdout line, serves POST /filter, /prioritize, /bind and /preempt, and GET /calls: a JSON
// record of every call (verb, pod, number of nodes, whether names or node objects came).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// call is one request the extender served, for the tests to read back.
type call struct {
	Verb      string `json:"verb"`
	Pod       string `json:"pod"`
	Nodes     int    `json:"nodes"`
	NodeNames bool   `json:"nodeNames"`
	Node      string `json:"node,omitempty"`
	Victims   int    `json:"victims,omitempty"`
}

type extender struct {
	reject, unresolvable, prefer, errorPods *regexp.Regexp
	noPreempt, sparePods                    *regexp.Regexp
	client                                  kubernetes.Interface
	mu                                      sync.Mutex
	calls                                   []call
}

func optional(expr string) *regexp.Regexp {
	if expr == "" {
		return nil
	}
	return regexp.MustCompile(expr)
}

func matches(re *regexp.Regexp, s string) bool { return re != nil && re.MatchString(s) }

func (e *extender) record(c call) {
	e.mu.Lock()
	e.calls = append(e.calls, c)
	e.mu.Unlock()
}

// names of the candidate nodes, from NodeNames (nodeCacheCapable) or from Nodes.
func names(args *extenderv1.ExtenderArgs) ([]string, bool) {
	if args.NodeNames != nil {
		return *args.NodeNames, true
	}
	var out []string
	if args.Nodes != nil {
		for i := range args.Nodes.Items {
			out = append(out, args.Nodes.Items[i].Name)
		}
	}
	return out, false
}

func podName(p *v1.Pod) string {
	if p == nil {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

func decode(w http.ResponseWriter, r *http.Request, v interface{}) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("writing the answer: %v", err)
	}
}

func (e *extender) filter(w http.ResponseWriter, r *http.Request) {
	var args extenderv1.ExtenderArgs
	if !decode(w, r, &args) {
		return
	}
	all, byName := names(&args)
	e.record(call{Verb: "filter", Pod: podName(args.Pod), Nodes: len(all), NodeNames: byName})
	if args.Pod != nil && matches(e.errorPods, args.Pod.Name) {
		reply(w, &extenderv1.ExtenderFilterResult{Error: "extender-go refuses pod " + args.Pod.Name})
		return
	}
	result := extenderv1.ExtenderFilterResult{
		FailedNodes:                extenderv1.FailedNodesMap{},
		FailedAndUnresolvableNodes: extenderv1.FailedNodesMap{},
	}
	var keep []string
	keepIdx := map[string]bool{}
	for _, n := range all {
		switch {
		case matches(e.unresolvable, n):
			result.FailedAndUnresolvableNodes[n] = "extender-go: node is out of service"
		case matches(e.reject, n):
			result.FailedNodes[n] = "extender-go: node rejected"
		default:
			keep = append(keep, n)
			keepIdx[n] = true
		}
	}
	if byName {
		result.NodeNames = &keep
	} else {
		list := &v1.NodeList{}
		for i := range args.Nodes.Items {
			if keepIdx[args.Nodes.Items[i].Name] {
				list.Items = append(list.Items, args.Nodes.Items[i])
			}
		}
		result.Nodes = list
	}
	reply(w, &result)
}

func (e *extender) prioritize(w http.ResponseWriter, r *http.Request) {
	var args extenderv1.ExtenderArgs
	if !decode(w, r, &args) {
		return
	}
	all, byName := names(&args)
	e.record(call{Verb: "prioritize", Pod: podName(args.Pod), Nodes: len(all), NodeNames: byName})
	if args.Pod != nil && matches(e.errorPods, args.Pod.Name) {
		http.Error(w, "extender-go refuses pod "+args.Pod.Name, http.StatusInternalServerError)
		return
	}
	list := make(extenderv1.HostPriorityList, 0, len(all))
	for _, n := range all {
		score := extenderv1.MinExtenderPriority
		if matches(e.prefer, n) {
			score = extenderv1.MaxExtenderPriority
		}
		list = append(list, extenderv1.HostPriority{Host: n, Score: score})
	}
	reply(w, &list)
}

func (e *extender) bind(w http.ResponseWriter, r *http.Request) {
	var args extenderv1.ExtenderBindingArgs
	if !decode(w, r, &args) {
		return
	}
	e.record(call{Verb: "bind", Pod: args.PodNamespace + "/" + args.PodName, Node: args.Node})
	result := extenderv1.ExtenderBindingResult{}
	if e.client != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		err := e.client.CoreV1().Pods(args.PodNamespace).Bind(ctx, &v1.Binding{
			ObjectMeta: metav1.ObjectMeta{Namespace: args.PodNamespace, Name: args.PodName, UID: args.PodUID},
			Target:     v1.ObjectReference{Kind: "Node", Name: args.Node},
		}, metav1.CreateOptions{})
		if err != nil {
			result.Error = err.Error()
		}
	}
	reply(w, &result)
}

// preempt keeps the candidates the rules allow, with the victims they allow. Whole pods
// (NodeNameToVictims) come to an extender that is not nodeCacheCapable; UIDs
// (NodeNameToMetaVictims) to the others, so pod names are known only in the first form.
func (e *extender) preempt(w http.ResponseWriter, r *http.Request) {
	var args extenderv1.ExtenderPreemptionArgs
	if !decode(w, r, &args) {
		return
	}
	victims := 0
	for _, v := range args.NodeNameToMetaVictims {
		victims += len(v.Pods)
	}
	for _, v := range args.NodeNameToVictims {
		victims += len(v.Pods)
	}
	e.record(call{Verb: "preempt", Pod: podName(args.Pod), Nodes: len(args.NodeNameToMetaVictims) + len(args.NodeNameToVictims), NodeNames: args.NodeNameToMetaVictims != nil, Victims: victims})
	out := extenderv1.ExtenderPreemptionResult{NodeNameToMetaVictims: map[string]*extenderv1.MetaVictims{}}
	for n, v := range args.NodeNameToMetaVictims {
		if matches(e.noPreempt, n) {
			continue
		}
		out.NodeNameToMetaVictims[n] = v
	}
	for n, v := range args.NodeNameToVictims {
		if matches(e.noPreempt, n) {
			continue
		}
		mv := &extenderv1.MetaVictims{NumPDBViolations: v.NumPDBViolations}
		for _, p := range v.Pods {
			if matches(e.sparePods, p.Name) {
				continue
			}
			mv.Pods = append(mv.Pods, &extenderv1.MetaPod{UID: string(p.UID)})
		}
		if len(mv.Pods) > 0 {
			out.NodeNameToMetaVictims[n] = mv
		}
	}
	reply(w, &out)
}

func (e *extender) listCalls(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reply(w, e.calls)
}

func post(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	reject := flag.String("reject", "", "filter: node names to reject")
	unresolvable := flag.String("unresolvable", "", "filter: node names to reject for good")
	prefer := flag.String("prefer", "", "prioritize: node names to score 10")
	errorPods := flag.String("error-pods", "", "pod names to answer with an error")
	noPreempt := flag.String("no-preempt", "", "preempt: node names where nothing may be evicted")
	sparePods := flag.String("spare-pods", "", "preempt: pod names never evicted")
	kubeconfig := flag.String("kubeconfig", "", "bind through this cluster (empty: bind only records)")
	flag.Parse()

	e := &extender{
		reject:       optional(*reject),
		unresolvable: optional(*unresolvable),
		prefer:       optional(*prefer),
		errorPods:    optional(*errorPods),
		noPreempt:    optional(*noPreempt),
		sparePods:    optional(*sparePods),
	}
	if *kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			log.Fatalf("kubeconfig: %v", err)
		}
		if e.client, err = kubernetes.NewForConfig(cfg); err != nil {
			log.Fatalf("client: %v", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/filter", post(e.filter))
	mux.HandleFunc("/prioritize", post(e.prioritize))
	mux.HandleFunc("/bind", post(e.bind))
	mux.HandleFunc("/preempt", post(e.preempt))
	mux.HandleFunc("/calls", e.listCalls)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, mux))
}
