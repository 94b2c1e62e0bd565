#!/bin/sh
# vLLM in docker on one node of a two-node DGX Spark cluster, under spark-tune
# (docs/guides/dgx-spark.md). Run it on both nodes: ROLE=head on the first, ROLE=worker on the other.
#
#   MODEL_DIR=/models/Qwen3-235B-A22B-FP8 ROLE=head HEAD_IP=10.0.0.1 ./vllm-node.sh
#   MODEL_DIR=/models/Qwen3-235B-A22B-FP8 ROLE=worker HEAD_IP=10.0.0.1 ./vllm-node.sh
#
# Every setting is an environment variable; ENGINE_CMD replaces the engine (the test runs this script
# with a stand-in loader and a small TCP server in its place: tests/integration/examples_test.cpp).
set -eu

MODEL_DIR=${MODEL_DIR:?set MODEL_DIR to the model directory (the same path on both nodes)}
ROLE=${ROLE:-head}                 # head: serves the API; worker: joins the head's Ray cluster
HEAD_IP=${HEAD_IP:-127.0.0.1}
PORT=${PORT:-8000}                 # the API port on the head; on a worker, the Ray port it waits for
IMAGE=${IMAGE:-vllm/vllm-openai:latest}
NAME=${NAME:-vllm-$ROLE}
SPARK_TUNE=${SPARK_TUNE:-spark-tune}
# 200 free blocks of 4 MiB (the largest block a 4 KiB-page kernel keeps; 32 MiB on 64 KiB pages).
BLOCKS=${BLOCKS:-200x4M}
# Act (evict, drop clean cache, compact, pause, stop) when free memory falls below this during the load.
FREE_FLOOR=${FREE_FLOOR:-8G}
LOAD_TTL=${LOAD_TTL:-30m}          # the window ends at the latest after this long

# 1. The host profile, kept across reboots (a sysctl.d drop-in; spark-tune revert removes it).
$SPARK_TUNE apply dgx-spark --persist

# 2. Fragmentation gate: compacts once when short of blocks; exit 1 means only a reboot gives them back.
if ! $SPARK_TUNE preflight --blocks "$BLOCKS"; then
  echo "vllm-node: not enough free ${BLOCKS#*x} blocks even after compaction: reboot this node before the load" >&2
  exit 1
fi

if [ "$ROLE" = head ]; then
  READY=127.0.0.1:$PORT
  DEFAULT_ENGINE="docker run --rm --name $NAME --gpus all --network host --ipc host \
    -v $MODEL_DIR:$MODEL_DIR:ro -e VLLM_HOST_IP=$HEAD_IP $IMAGE \
    --model $MODEL_DIR --port $PORT --tensor-parallel-size 2 --distributed-executor-backend ray"
else
  READY=$HEAD_IP:$PORT
  DEFAULT_ENGINE="docker run --rm --name $NAME --gpus all --network host --ipc host \
    -v $MODEL_DIR:$MODEL_DIR:ro --entrypoint ray $IMAGE start --block --address=$HEAD_IP:6379"
fi
ENGINE_CMD=${ENGINE_CMD:-$DEFAULT_ENGINE}

# 3. A load window on the model directory, begun before the engine starts: the overlay, its files
#    kept out of the page cache, and the floor. It watches this shell's pid, which becomes the engine
#    (exec below), and ends when the API port accepts connections (the load is done).
#    In docker the engine's processes are the daemon's, not this shell's: the floor's last step is
#    `docker stop` (--on-floor) rather than a signal to the docker client.
WINDOW=$($SPARK_TUNE window begin --files "$MODEL_DIR" --pid $$ --until-port "$READY" --ttl "$LOAD_TTL" \
  --free-floor "$FREE_FLOOR" --on-floor "docker stop $NAME" --label "$NAME")
echo "vllm-node: load window $WINDOW on $MODEL_DIR until $READY accepts" >&2

# 4. The engine, in this process (the window's watched pid).
# shellcheck disable=SC2086 # the command is words on purpose
exec $ENGINE_CMD
