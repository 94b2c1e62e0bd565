#!/usr/bin/env python3
# The agent -> CLI hop of the event stream: memcg OOM kills in a child memory cgroup (cgroup v1) of
# this process's own; for each, the time from the event's time_ms (stamped when the agent's hub
# got it from the ring buffer) to the line read from `spark-tune --json events` (long-poll through
# the agent). Run as root: bench/agent_event_hop.py N [path/to/spark-tune]
import os, sys, json, time, subprocess, signal, tempfile
tmp=tempfile.mkdtemp(prefix="spark-hop-")
B=sys.argv[2] if len(sys.argv) > 2 else "build/agent/spark-tune"
env=dict(os.environ, SPARK_TUNE_STATE_DIR=tmp+"/state", SPARK_TUNE_RUN_DIR=tmp+"/run")
own=[l.split(":")[2].strip() for l in open("/proc/self/cgroup") if ":memory:" in l][0]
cg="/sys/fs/cgroup/memory"+own.rstrip("/")+"/spark-lat-%d"%os.getpid()
os.mkdir(cg); open(cg+"/memory.limit_in_bytes","w").write(str(32<<20))
agent=subprocess.Popen([B,"agent","--metrics-port","0"],env=env,stderr=subprocess.DEVNULL)
time.sleep(3)
ev=subprocess.Popen([B,"--json","events"],env=env,stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True,bufsize=1)
time.sleep(1)
lat=[]; N=int(sys.argv[1])
import threading, queue
q=queue.Queue()
def rd():
  for line in ev.stdout: q.put((time.time()*1000,line))
threading.Thread(target=rd,daemon=True).start()
try:
  for i in range(N):
    pid=os.fork()
    if pid==0:
      open(cg+"/cgroup.procs","w").write(str(os.getpid()))
      a=[]
      while True: a.append(bytearray(1<<20))
    os.waitpid(pid,0)
    while True:
      now,line=q.get()
      j=json.loads(line)
      if j["type"]=="oom_kill" and j["data"].get("pid")==pid:
        lat.append(now-j["time_ms"]); break
finally:
  ev.kill(); agent.send_signal(signal.SIGTERM); agent.wait()
  for _ in range(50):
    try: os.rmdir(cg); break
    except OSError: time.sleep(0.05)
  import shutil; shutil.rmtree(tmp, ignore_errors=True)
lat.sort()
print("n=%d agent->CLI ms: p50=%.2f p99=%.2f max=%.2f"%(len(lat),lat[len(lat)//2],lat[int(len(lat)*0.99)-1 if len(lat)>=100 else -1],lat[-1]))
