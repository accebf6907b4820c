/**
 * Running a real balancer (haproxy, nginx) from a test: a free loopback port, the process with its
 * output collected, a bounded wait until it listens, and a stop that always reaps it.
 */

/** A loopback port that was free a moment ago (the balancers bind it themselves). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Waits until `port` accepts TCP connections, bounded. */
async function waitListening(port: number, child: Deno.ChildProcess, what: string): Promise<void> {
  let exited = false;
  child.status.then(() => (exited = true));
  for (let attempt = 0; attempt < 100; attempt++) {
    if (exited) throw new Error(`${what} exited before listening`);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`${what} is not listening on ${port} after 10 s`);
}

export interface Balancer extends AsyncDisposable {
  readonly port: number;
  readonly pid: number;
  output(): string;
}

/** One proxy instance behind `deploy/haproxy.cfg`: its WebSocket port and its metrics port. */
export interface HaproxyInstance {
  readonly port: number;
  readonly metricsPort: number;
}

/**
 * The text of `deploy/haproxy.cfg` with its `@...@` placeholders filled in: the frontend port and
 * each instance's port and metrics port (health checks), nothing else changed. Used by
 * tests/cluster_test.ts and by the bench (scripts/bench_cluster.ts), so both run the exact file.
 */
export async function haproxyConfig(front: number, instances: HaproxyInstance[]): Promise<string> {
  let config = await Deno.readTextFile(new URL("../deploy/haproxy.cfg", import.meta.url));
  config = config.replace("@FRONT_PORT@", String(front));
  instances.forEach((instance, index) => {
    config = config
      .replace(`@PORT${index + 1}@`, String(instance.port))
      .replace(`@METRICS${index + 1}@`, String(instance.metricsPort));
  });
  const left = config.match(/@[A-Z0-9_]+@/);
  if (left) throw new Error(`deploy/haproxy.cfg: placeholder ${left[0]} not filled in`);
  return config;
}

/** Runs `program` with `args` until disposed; collects its stderr. */
export async function runBalancer(
  program: string,
  args: string[],
  port: number,
  cleanup: string,
): Promise<Balancer> {
  const child = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk);
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }, 5000);
    await child.status;
    clearTimeout(timer);
    await collecting;
    await Deno.remove(cleanup, { recursive: true });
  };
  try {
    await waitListening(port, child, program);
  } catch (error) {
    await stop();
    throw new Error(`${error}\n${output}`);
  }
  return { port, pid: child.pid, output: () => output, [Symbol.asyncDispose]: stop };
}

/**
 * Runs Debian's nginx in the foreground with `server` (one `server { … }` block) as its only
 * server, every path of its own in a fresh temporary directory (prefix `prefix`), on `port`.
 */
export async function startNginx(server: string, port: number, prefix: string): Promise<Balancer> {
  const dir = await Deno.makeTempDir({ prefix });
  const config = `${dir}/nginx.conf`;
  const root = Deno.uid() === 0 ? "user root;\n" : "";
  await Deno.writeTextFile(
    config,
    `${root}daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${server}
}
`,
  );
  return await runBalancer("/usr/sbin/nginx", ["-p", dir, "-c", config, "-e", "stderr"], port, dir);
}
