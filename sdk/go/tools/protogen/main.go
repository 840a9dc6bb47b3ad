// Command protogen compiles the plugin protocol's .proto files with
// protocompile (no protoc needed) and runs protoc-gen-go and
// protoc-gen-go-grpc on them, writing the Go code into the SDK module.
//
// It is run by sdk/go/generate.sh, which builds the two code generators at
// pinned versions first:
//
//	protogen -proto ../../proto -out .. -plugins /tmp/bin strata/plugin/v1/plugin.proto
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

func main() {
	protoRoot := flag.String("proto", "", "directory the .proto import paths are relative to")
	out := flag.String("out", "", "root of the Go module the code goes into")
	module := flag.String("module", "strata.io/sdk/go", "the Go module path of -out")
	plugins := flag.String("plugins", "", "directory holding protoc-gen-go and protoc-gen-go-grpc")
	flag.Parse()
	if *protoRoot == "" || *out == "" || *plugins == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: protogen -proto DIR -out DIR -plugins DIR FILE.proto...")
		os.Exit(2)
	}
	if err := run(*protoRoot, *out, *module, *plugins, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(protoRoot, out, module, plugins string, files []string) error {
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{protoRoot},
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := c.Compile(context.Background(), files...)
	if err != nil {
		return err
	}
	// Every file the request names, dependencies first.
	var all []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imps := fd.Imports()
		for i := 0; i < imps.Len(); i++ {
			add(imps.Get(i).FileDescriptor)
		}
		all = append(all, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	for _, gen := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		req := &pluginpb.CodeGeneratorRequest{
			FileToGenerate: files,
			Parameter:      proto.String("module=" + module),
			ProtoFile:      all,
		}
		in, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		cmd := exec.Command(filepath.Join(plugins, gen))
		cmd.Stdin = bytes.NewReader(in)
		cmd.Stderr = os.Stderr
		outBytes, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%s: %w", gen, err)
		}
		var resp pluginpb.CodeGeneratorResponse
		if err := proto.Unmarshal(outBytes, &resp); err != nil {
			return fmt.Errorf("%s: reading its answer: %w", gen, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("%s: %s", gen, resp.GetError())
		}
		for _, f := range resp.File {
			path := filepath.Join(out, f.GetName())
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte(f.GetContent()), 0o644); err != nil {
				return err
			}
			fmt.Println("wrote", path)
		}
	}
	return nil
}
