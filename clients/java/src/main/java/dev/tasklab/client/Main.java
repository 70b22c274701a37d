package dev.tasklab.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Timestamp;
import com.google.rpc.BadRequest;
import com.google.rpc.PreconditionFailure;
import dev.tasklab.v1.CancelResponse;
import dev.tasklab.v1.ChildRef;
import dev.tasklab.v1.CompositeKind;
import dev.tasklab.v1.CompositeSpec;
import dev.tasklab.v1.SubmitCompositeRequest;
import dev.tasklab.v1.SubmitRequest;
import dev.tasklab.v1.SubmitResponse;
import dev.tasklab.v1.Task;
import dev.tasklab.v1.TaskInfo;
import dev.tasklab.v1.TaskSpec;
import dev.tasklab.v1.TaskStatus;
import dev.tasklab.v1.TaskType;
import dev.tasklab.v1.TimelineEntry;
import dev.tasklab.v1.WatchEvent;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The command line: submit a task to the Python providers and watch it to its final state.
 *
 * <pre>
 * java -jar target/tasklab-client.jar --zk 127.0.0.1:2181 \
 *     submit --type SHELL --payload 'echo hi' --wait
 * </pre>
 *
 * <p>Exit codes, as the Python CLI has them: 0 the task ended SUCCESS (or, without --wait, was
 * accepted); 1 it ended otherwise, did not end in time, or the call failed; 2 bad input (a
 * usage error here, or INVALID_ARGUMENT from the provider). Errors are one line on stderr.
 */
public final class Main {
  static final String USAGE =
      """
      usage: java -jar tasklab-client.jar [--zk HOSTS] [--chroot PATH] [--timeout SECONDS]
                                          [--api-key KEY] COMMAND ...

      Finds TaskService providers in ZooKeeper (/services/TaskService under the chroot) and
      calls them over gRPC.

      commands:
        submit --payload TEXT|- [--type SHELL|PYTHON_SCRIPT|HANDLER] [--name NAME]
               [--execution-timeout SECONDS] [--retries N] [--request-id ID]
               [--shards N [--parallelism P]] [--wait] [--wait-timeout SECONDS]
                        submit a task (--payload - reads it from stdin); prints its id, or
                        with --wait watches it to its final state (transitions and log
                        lines as they happen) and prints it; with --shards, a SHARDS
                        composite of it (TASKLAB_SHARD_INDEX 0..N-1, at most P at once)
        watch TASK_ID [--wait-timeout SECONDS]
                        watch a task to its final state
        get TASK_ID     a task with its timeline and log lines
        cancel TASK_ID  cancel a task that has not finished

      options:
        --zk HOSTS      ZooKeeper, host:port[,host:port] (default $TASKLAB_ZK_HOSTS or
                        127.0.0.1:2181)
        --chroot PATH   tasklab's ZooKeeper chroot (default $TASKLAB_ZK_CHROOT or none)
        --timeout S     deadline of each call but Watch, failovers included (default 10)
        --api-key KEY   sent as x-api-key metadata (default $TASKLAB_API_KEY)

      exit codes: 0 SUCCESS (or accepted), 1 any other end or a failed call, 2 bad input
      """;

  private static final DateTimeFormatter CLOCK =
      DateTimeFormatter.ofPattern("HH:mm:ss.SSS").withZone(ZoneOffset.UTC);
  // A fire time in UTC, to the second, as `tasklab status` and the schedule's views show it.
  private static final DateTimeFormatter MOMENT =
      DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss 'UTC'").withZone(ZoneOffset.UTC);

  private final PrintStream out;
  private final PrintStream err;

  Main(PrintStream out, PrintStream err) {
    this.out = out;
    this.err = err;
  }

  public static void main(String[] args) {
    int code = new Main(System.out, System.err).run(args, System.getenv());
    System.out.flush();
    System.exit(code);
  }

  /** Thrown for a command line that does not parse: usage error, exit code 2. */
  static final class UsageError extends RuntimeException {
    UsageError(String message) {
      super(message);
    }
  }

  int run(String[] argv, Map<String, String> env) {
    Args args;
    try {
      args = Args.parse(argv, env);
    } catch (UsageError e) {
      err.println("error: " + e.getMessage() + " (--help for usage)");
      return 2;
    }
    if (args.help) {
      out.print(USAGE);
      return 0;
    }
    ProviderDirectory directory = new ProviderDirectory(args.zk, args.chroot, this::notice);
    try (directory) {
      if (!directory.start(5_000)) {
        err.println("error: cannot reach ZooKeeper at " + directory.description() + " within 5s");
        return 1;
      }
      try (TaskServiceClient client =
          new TaskServiceClient(directory, this::notice).withApiKey(args.apiKey)) {
        return switch (args.command) {
          case "submit" -> submit(client, args);
          case "watch" -> watch(client, args.taskId, args);
          case "get" -> get(client, args);
          case "cancel" -> cancel(client, args);
          default -> throw new IllegalStateException(args.command);
        };
      }
    } catch (StatusRuntimeException e) {
      return failed(e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      err.println("error: interrupted");
      return 1;
    } catch (RuntimeException e) {
      err.println("error: " + e.getMessage());
      return 1;
    }
  }

  // -- commands ----------------------------------------------------------------------------

  private int submit(TaskServiceClient client, Args args) {
    SubmitRequest.Builder request =
        SubmitRequest.newBuilder()
            .setTaskType(args.type)
            .setPayload(args.payload)
            .setTaskName(args.name)
            .setRequestId(args.requestId);
    if (args.executionTimeout != null) {
      request.setExecutionTimeout(args.executionTimeout);
    }
    if (args.retries != null) {
      request.setRetryCount(args.retries);
    }
    if (args.payload.equals("-")) {
      try {
        request.setPayload(new String(System.in.readAllBytes(), StandardCharsets.UTF_8));
      } catch (IOException e) {
        throw new UncheckedIOException("cannot read the payload from stdin", e);
      }
    }
    SubmitResponse response =
        args.shards == null
            ? client.submit(request.build(), args.timeout)
            : client.submitComposite(shards(request.build(), args), args.timeout);
    Task task = response.getTask();
    if (!args.wait) {
      out.println(task.getTaskId());
      return 0;
    }
    out.printf(
        "submitted %s (%s%s) via %s%n",
        task.getTaskId(),
        task.getStatus(),
        response.getCreated() ? "" : ", an earlier submit with this request id",
        client.lastProvider());
    return watch(client, task.getTaskId(), args);
  }

  /** The task as the template of a SHARDS composite, run --shards times. */
  private static SubmitCompositeRequest shards(SubmitRequest task, Args args) {
    TaskSpec.Builder template =
        TaskSpec.newBuilder()
            .setTaskType(task.getTaskType())
            .setPayload(task.getPayload());
    if (task.hasExecutionTimeout()) {
      template.setExecutionTimeout(task.getExecutionTimeout());
    }
    if (task.hasRetryCount()) {
      template.setRetryCount(task.getRetryCount());
    }
    CompositeSpec.Builder spec =
        CompositeSpec.newBuilder()
            .setKind(CompositeKind.SHARDS)
            .setTaskName(task.getTaskName())
            .setCompletions(args.shards)
            .setTemplate(template);
    if (args.parallelism != null) {
      spec.setParallelism(args.parallelism);
    }
    return SubmitCompositeRequest.newBuilder()
        .setSpec(spec)
        .setRequestId(task.getRequestId())
        .build();
  }

  private int watch(TaskServiceClient client, String taskId, Args args) {
    Task last = client.watch(taskId, 0, 0, args.waitTimeout, this::printEvent);
    if (last == null) {
      err.println("error: the watch of " + taskId + " ended before the task did");
      return 1;
    }
    out.println("final:");
    printTask(last);
    return last.getStatus() == TaskStatus.SUCCESS ? 0 : 1;
  }

  private int get(TaskServiceClient client, Args args) {
    TaskInfo info = client.getTaskInfo(args.taskId, args.timeout);
    printTask(info.getTask());
    if (info.getTask().getChildrenCount() > 0) {
      out.println("children:");
      for (ChildRef child : info.getTask().getChildrenList()) {
        String where =
            !child.getNode().isEmpty()
                ? child.getNode()
                : child.hasShardIndex() ? String.valueOf(child.getShardIndex()) : "-";
        out.printf(
            "  %5s  %-9s %-10s %s%n", where, child.getRole(), child.getStatus(), child.getTaskId());
      }
      out.println("progress: " + info.getTask().getProgressMap());
    }
    if (info.getTimelineCount() > 0) {
      out.println("timeline:");
      for (TimelineEntry entry : info.getTimelineList()) {
        out.println("  " + describe(entry));
      }
    }
    if (info.getLogsCount() > 0) {
      out.println("logs:");
      for (String line : info.getLogsList()) {
        out.println("  " + line);
      }
    }
    return 0;
  }

  private int cancel(TaskServiceClient client, Args args) {
    CancelResponse response = client.cancel(args.taskId, args.timeout);
    String how =
        response.getAlreadyCancelled()
            ? "already cancelled"
            : "from " + response.getCancelledFrom();
    out.printf("%s %s (%s)%n", response.getTaskId(), response.getStatus(), how);
    return 0;
  }

  // -- output ------------------------------------------------------------------------------

  private void printEvent(WatchEvent event) {
    switch (event.getEventCase()) {
      case TRANSITION ->
          out.printf("[%d] %s%n", event.getSequence(), describe(event.getTransition()));
      case LOG -> out.printf("log | %s%n", event.getLog().getLine());
      default -> {} // FINAL: printed in full by watch()
    }
    out.flush(); // live: a reader (or a test) sees each event as it happens
  }

  private static String describe(TimelineEntry entry) {
    StringBuilder line = new StringBuilder();
    line.append(clock(entry.getAt())).append("  ");
    if (entry.getFromState() != TaskStatus.TASK_STATUS_UNSPECIFIED) {
      line.append(entry.getFromState()).append(" -> ");
    }
    line.append(entry.getState())
        .append("  attempt ").append(entry.getAttempt())
        .append("  epoch ").append(entry.getEpoch())
        .append("  by ").append(entry.getActor().isEmpty() ? "?" : entry.getActor());
    if (!entry.getReason().isEmpty()) {
      line.append("  (").append(entry.getReason()).append(')');
    }
    return line.toString();
  }

  /** The task, field for field as `tasklab status` prints it. */
  private void printTask(Task task) {
    out.println("taskId:   " + task.getTaskId());
    out.println("name:     " + task.getTaskName());
    out.println("type:     " + task.getTaskType());
    out.println("status:   " + task.getStatus());
    out.println("attempt:  " + task.getAttempt());
    if (!task.getParentId().isEmpty()) {
      out.println("parent:   " + task.getParentId() + " (" + task.getRole() + ")");
    }
    if (!task.getAgentId().isEmpty()) {
      out.println("agent:    " + task.getAgentId());
    }
    if (task.hasExitCode()) {
      out.println("exitCode: " + task.getExitCode());
    }
    if (!task.getScheduleId().isEmpty()) {
      // A cron schedule's run: `tasklab schedule show NAME` has the schedule's other runs.
      String fired =
          task.hasScheduledFor() ? " (fired for " + moment(task.getScheduledFor()) + ")" : "";
      out.println("schedule: " + task.getScheduleId() + fired);
    }
    if (!task.getTraceId().isEmpty()) {
      // The trace of the current attempt, to look up in the trace store.
      out.println("traceId:  " + task.getTraceId());
    }
    if (task.hasError() && !task.getError().isEmpty()) {
      out.println("error:    " + task.getError());
    }
    if (task.hasResult() && !task.getResult().isEmpty()) {
      out.println("result:");
      for (String line : task.getResult().stripTrailing().split("\n", -1)) {
        out.println("  " + line);
      }
    }
    out.flush();
  }

  private static String clock(Timestamp at) {
    return CLOCK.format(Instant.ofEpochSecond(at.getSeconds(), at.getNanos()));
  }

  private static String moment(Timestamp at) {
    return MOMENT.format(Instant.ofEpochSecond(at.getSeconds(), at.getNanos()));
  }

  private void notice(String line) {
    err.println("tasklab-client: " + line);
  }

  /** One line for a failed call: the status, its description and any field violations. */
  private int failed(StatusRuntimeException e) {
    Status status = e.getStatus();
    List<String> details = new ArrayList<>();
    com.google.rpc.Status rich = StatusProto.fromThrowable(e);
    if (rich != null) {
      for (Any detail : rich.getDetailsList()) {
        try {
          if (detail.is(BadRequest.class)) {
            BadRequest badRequest = detail.unpack(BadRequest.class);
            for (BadRequest.FieldViolation v : badRequest.getFieldViolationsList()) {
              details.add(v.getField() + ": " + v.getDescription());
            }
          } else if (detail.is(PreconditionFailure.class)) {
            for (PreconditionFailure.Violation v :
                detail.unpack(PreconditionFailure.class).getViolationsList()) {
              details.add(v.getDescription());
            }
          }
        } catch (InvalidProtocolBufferException unreadable) {
          // The status line alone still says what happened.
        }
      }
    }
    String description = status.getDescription() == null ? "" : ": " + status.getDescription();
    // The providers' descriptions usually name the violations already: add only the others.
    details.removeIf(description::contains);
    String violations = details.isEmpty() ? "" : " [" + String.join("; ", details) + "]";
    err.println("error: " + status.getCode() + description + violations);
    return status.getCode() == Status.Code.INVALID_ARGUMENT ? 2 : 1;
  }

  // -- the command line --------------------------------------------------------------------

  /** The parsed command line. Hand-written: a dependency for a dozen options is not worth it. */
  static final class Args {
    String zk;
    String chroot;
    String apiKey;
    Duration timeout = TaskServiceClient.DEFAULT_TIMEOUT;
    Duration waitTimeout = Duration.ofSeconds(300);
    boolean help;
    String command;
    String taskId;
    TaskType type = TaskType.SHELL;
    String payload;
    String name = "";
    String requestId = "";
    Integer executionTimeout;
    Integer retries;
    Integer shards;
    Integer parallelism;
    boolean wait;

    static Args parse(String[] argv, Map<String, String> env) {
      Args a = new Args();
      a.zk = env.getOrDefault("TASKLAB_ZK_HOSTS", "127.0.0.1:2181");
      a.chroot = env.getOrDefault("TASKLAB_ZK_CHROOT", "");
      a.apiKey = env.getOrDefault("TASKLAB_API_KEY", "");
      List<String> positional = new ArrayList<>();
      for (int i = 0; i < argv.length; i++) {
        String arg = argv[i];
        switch (arg) {
          case "-h", "--help" -> a.help = true;
          case "--zk" -> a.zk = value(argv, ++i, arg);
          case "--chroot" -> a.chroot = value(argv, ++i, arg);
          case "--api-key" -> a.apiKey = value(argv, ++i, arg);
          case "--timeout" -> a.timeout = seconds(value(argv, ++i, arg), arg);
          case "--wait-timeout" -> a.waitTimeout = seconds(value(argv, ++i, arg), arg);
          case "--type", "-t" -> a.type = taskType(value(argv, ++i, arg));
          case "--payload", "-p" -> a.payload = value(argv, ++i, arg);
          case "--name", "-n" -> a.name = value(argv, ++i, arg);
          case "--request-id" -> a.requestId = value(argv, ++i, arg);
          case "--execution-timeout" -> a.executionTimeout = integer(value(argv, ++i, arg), arg);
          case "--retries" -> a.retries = integer(value(argv, ++i, arg), arg);
          case "--shards" -> a.shards = integer(value(argv, ++i, arg), arg);
          case "--parallelism" -> a.parallelism = integer(value(argv, ++i, arg), arg);
          case "--wait", "-w" -> a.wait = true;
          default -> {
            if (arg.startsWith("-") && !arg.equals("-")) {
              throw new UsageError("unknown option " + arg);
            }
            positional.add(arg);
          }
        }
      }
      if (a.help) {
        return a;
      }
      if (positional.isEmpty()) {
        throw new UsageError("a command is required: submit, watch, get or cancel");
      }
      a.command = positional.remove(0);
      switch (a.command) {
        case "submit" -> {
          // `submit 'echo hi'` works as `tasklab submit 'echo hi'` does.
          if (a.payload == null && positional.size() == 1) {
            a.payload = positional.remove(0);
          }
          if (a.payload == null) {
            throw new UsageError("submit needs --payload");
          }
          if (a.parallelism != null && a.shards == null) {
            throw new UsageError("--parallelism only with --shards N");
          }
        }
        case "watch", "get", "cancel" -> {
          if (positional.size() != 1) {
            throw new UsageError(a.command + " needs one TASK_ID");
          }
          a.taskId = positional.remove(0);
        }
        default -> throw new UsageError("unknown command " + a.command);
      }
      if (!positional.isEmpty()) {
        throw new UsageError("unexpected argument " + positional.get(0));
      }
      return a;
    }

    private static String value(String[] argv, int i, String option) {
      if (i >= argv.length) {
        throw new UsageError(option + " needs a value");
      }
      return argv[i];
    }

    private static Duration seconds(String text, String option) {
      try {
        double s = Double.parseDouble(text);
        if (!(s > 0)) {
          throw new NumberFormatException();
        }
        return Duration.ofMillis((long) (s * 1000));
      } catch (NumberFormatException e) {
        throw new UsageError(option + " takes seconds > 0, not " + text);
      }
    }

    private static Integer integer(String text, String option) {
      try {
        return Integer.valueOf(text);
      } catch (NumberFormatException e) {
        throw new UsageError(option + " takes an integer, not " + text);
      }
    }

    private static TaskType taskType(String text) {
      return switch (text.toUpperCase()) {
        case "SHELL" -> TaskType.SHELL;
        case "PYTHON_SCRIPT" -> TaskType.PYTHON_SCRIPT;
        case "HANDLER" -> TaskType.HANDLER;
        default -> throw new UsageError("--type is SHELL, PYTHON_SCRIPT or HANDLER, not " + text);
      };
    }
  }
}
