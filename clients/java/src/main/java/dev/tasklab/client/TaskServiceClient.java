package dev.tasklab.client;

import dev.tasklab.v1.CancelRequest;
import dev.tasklab.v1.CancelResponse;
import dev.tasklab.v1.GetTaskInfoRequest;
import dev.tasklab.v1.SubmitCompositeRequest;
import dev.tasklab.v1.SubmitRequest;
import dev.tasklab.v1.SubmitResponse;
import dev.tasklab.v1.Task;
import dev.tasklab.v1.TaskInfo;
import dev.tasklab.v1.TaskServiceGrpc;
import dev.tasklab.v1.TaskServiceGrpc.TaskServiceBlockingStub;
import dev.tasklab.v1.WatchEvent;
import dev.tasklab.v1.WatchRequest;
import io.grpc.Context;
import io.grpc.Deadline;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * TaskServiceClient: the client-side stub that finds, balances and fails over providers.
 *
 * <p>Pattern: Proxy, the Java twin of {@code TaskServiceProxy} in common/rpc/proxy.py. Callers
 * use it as if it were one server; behind it:
 *
 * <ul>
 *   <li>discovery: {@link ProviderDirectory} watches {@code /services/TaskService} in ZooKeeper,
 *       so providers coming and going need no restart or reconfiguration here;
 *   <li>balancing: round robin over the providers, in address order;
 *   <li>failover: a call answered UNAVAILABLE (the provider died, is stopping, or its Redis is
 *       down) is tried again on the next provider until it succeeds or its own deadline passes.
 *       Any other status is the answer, not a failure of the provider, and is thrown at once.
 * </ul>
 *
 * <p>Retrying is only safe for a call that cannot apply twice, so Submit always carries a
 * request id (one is generated when the caller gave none): a provider may store the task and
 * die before it answers, and the next provider then returns that same task. Watch resumes on
 * the next provider from the sequence numbers it last delivered, so every event arrives once.
 */
public final class TaskServiceClient implements AutoCloseable {
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(10);
  /**
   * A provider that answered UNAVAILABLE is passed over for this long (unless every provider
   * is): its node lingers for a session timeout after it died.
   */
  static final long SUSPECT_FOR_NANOS = TimeUnit.SECONDS.toNanos(2);

  private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
  private static final Metadata.Key<String> API_KEY =
      Metadata.Key.of("x-api-key", Metadata.ASCII_STRING_MARSHALLER);

  private final ProviderDirectory directory;
  private final Consumer<String> notices;
  private final Metadata headers = new Metadata();
  private final Map<String, ManagedChannel> channels = new HashMap<>();
  private final Map<String, Long> suspectUntil = new HashMap<>();
  private long next;
  private volatile int failovers;
  private volatile String lastProvider = "";

  /**
   * @param directory where providers are found (started by the caller)
   * @param notices where a line about a failover goes (stderr in the CLI)
   */
  public TaskServiceClient(ProviderDirectory directory, Consumer<String> notices) {
    this.directory = directory;
    this.notices = notices;
  }

  /** Sends this API key with every call ({@code x-api-key} metadata), for providers that ask. */
  public TaskServiceClient withApiKey(String apiKey) {
    if (apiKey != null && !apiKey.isEmpty()) {
      headers.put(API_KEY, apiKey);
    }
    return this;
  }

  /** Calls retried on another provider so far. */
  public int failovers() {
    return failovers;
  }

  /** The provider the latest attempt went to. */
  public String lastProvider() {
    return lastProvider;
  }

  // -- the TaskService ---------------------------------------------------------------------

  public SubmitResponse submit(SubmitRequest request, Duration timeout) {
    // The request id makes the failover in call() safe: same id, same task, on any provider.
    SubmitRequest withId =
        request.getRequestId().isEmpty()
            ? request.toBuilder().setRequestId(UUID.randomUUID().toString()).build()
            : request;
    return call("Submit", timeout, stub -> stub.submit(withId));
  }

  /**
   * A composite task (its parent and children) from one document; answered as Submit is. The
   * request id makes the failover safe here too.
   */
  public SubmitResponse submitComposite(SubmitCompositeRequest request, Duration timeout) {
    SubmitCompositeRequest withId =
        request.getRequestId().isEmpty()
            ? request.toBuilder().setRequestId(UUID.randomUUID().toString()).build()
            : request;
    return call("SubmitComposite", timeout, stub -> stub.submitComposite(withId));
  }

  public TaskInfo getTaskInfo(String taskId, Duration timeout) {
    GetTaskInfoRequest request = GetTaskInfoRequest.newBuilder().setTaskId(taskId).build();
    return call("GetTaskInfo", timeout, stub -> stub.getTaskInfo(request));
  }

  public CancelResponse cancel(String taskId, Duration timeout) {
    // Idempotent on the server: a cancelled task accepts a cancel again.
    CancelRequest request = CancelRequest.newBuilder().setTaskId(taskId).build();
    return call("Cancel", timeout, stub -> stub.cancel(request));
  }

  /**
   * Every transition and log line of the task from the given positions, handed to {@code
   * onEvent} in order (the final event included), across providers, each event once.
   *
   * @return the task in its final state, or null when the stream ended before it had one
   */
  public Task watch(
      String taskId,
      long fromTransition,
      long fromLog,
      Duration timeout,
      Consumer<WatchEvent> onEvent) {
    long nextTransition = fromTransition;
    long nextLog = fromLog;
    StatusRuntimeException last = null;
    Attempts attempts = new Attempts(timeout);
    for (String address = attempts.next(); address != null; address = attempts.next()) {
      WatchRequest request =
          WatchRequest.newBuilder()
              .setTaskId(taskId)
              .setFromTransition(nextTransition)
              .setFromLog(nextLog)
              .build();
      // A blocking stream left unfinished stays open: cancelling its context closes it.
      Context.CancellableContext context = Context.current().withCancellation();
      Context previous = context.attach();
      try {
        Iterator<WatchEvent> events = stub(address, attempts.deadline).watch(request);
        while (events.hasNext()) {
          WatchEvent event = events.next();
          switch (event.getEventCase()) {
            case TRANSITION -> nextTransition = event.getSequence() + 1;
            case LOG -> nextLog = event.getSequence() + 1;
            default -> {}
          }
          onEvent.accept(event);
          if (event.getEventCase() == WatchEvent.EventCase.FINAL) {
            return event.getFinal();
          }
        }
        return null;
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
          throw e;
        }
        last = e;
        unavailable(address, e);
      } finally {
        context.detach(previous);
        context.cancel(null);
      }
    }
    throw noProvider("Watch", last, attempts.triedAny);
  }

  // -- one call, several attempts ------------------------------------------------------------

  private <T> T call(String method, Duration timeout, Function<TaskServiceBlockingStub, T> rpc) {
    StatusRuntimeException last = null;
    Attempts attempts = new Attempts(timeout);
    for (String address = attempts.next(); address != null; address = attempts.next()) {
      try {
        return rpc.apply(stub(address, attempts.deadline));
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
          throw e;
        }
        last = e;
        unavailable(address, e);
      }
    }
    throw noProvider(method, last, attempts.triedAny);
  }

  /** The providers one call tries, in turn, until its deadline. */
  private final class Attempts {
    final Deadline deadline;
    final Set<String> tried = new HashSet<>();
    boolean triedAny;
    long pauseMillis = 50;

    Attempts(Duration timeout) {
      this.deadline = Deadline.after((timeout == null ? DEFAULT_TIMEOUT : timeout).toNanos(),
          TimeUnit.NANOSECONDS);
    }

    /** The next provider to try, or null when the deadline passed or none registered. */
    String next() {
      // Bounded: every turn either returns or sleeps, and the deadline ends the sleeping.
      while (!deadline.isExpired()) {
        String address = pick(tried, deadline);
        if (address != null) {
          tried.add(address);
          triedAny = true;
          lastProvider = address;
          return address;
        }
        if (!triedAny) {
          return null; // none registered before the deadline
        }
        // Every provider failed once: give them a moment (a restart, Redis coming back), then
        // go round again.
        long left = deadline.timeRemaining(TimeUnit.MILLISECONDS);
        sleep(Math.max(0, Math.min(pauseMillis, left)));
        pauseMillis = Math.min(pauseMillis * 2, 1000);
        tried.clear();
      }
      return null;
    }
  }

  /**
   * The next provider in round-robin order not yet tried by this call (healthy ones first);
   * waits for one to register until the deadline; null when every one was tried.
   */
  private String pick(Set<String> tried, Deadline deadline) {
    List<String> providers;
    try {
      providers =
          directory.awaitProviders(
              System.nanoTime() + deadline.timeRemaining(TimeUnit.NANOSECONDS));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw Status.CANCELLED.withDescription("interrupted").asRuntimeException();
    }
    synchronized (this) {
      closeChannelsOfVanished(providers);
      long now = System.nanoTime();
      List<String> fresh = providers.stream().filter(a -> !tried.contains(a)).toList();
      List<String> healthy =
          fresh.stream().filter(a -> suspectUntil.getOrDefault(a, now) - now <= 0).toList();
      List<String> choices = healthy.isEmpty() ? fresh : healthy;
      if (choices.isEmpty()) {
        return null;
      }
      return choices.get((int) (next++ % choices.size()));
    }
  }

  /** A provider whose node vanished is dropped with its connection. */
  private void closeChannelsOfVanished(List<String> providers) {
    channels.entrySet().removeIf(entry -> {
      if (providers.contains(entry.getKey())) {
        return false;
      }
      entry.getValue().shutdownNow();
      suspectUntil.remove(entry.getKey());
      return true;
    });
  }

  private synchronized TaskServiceBlockingStub stub(String address, Deadline deadline) {
    ManagedChannel channel = channels.computeIfAbsent(address, TaskServiceClient::dial);
    return TaskServiceGrpc.newBlockingStub(channel)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers))
        .withDeadline(deadline);
  }

  private static ManagedChannel dial(String address) {
    // The node's name is host:port; the last colon splits them (an IPv6 host keeps its own).
    int colon = address.lastIndexOf(':');
    String host = address.substring(0, colon).replaceAll("^\\[|\\]$", "");
    int port = Integer.parseInt(address.substring(colon + 1));
    return Grpc.newChannelBuilderForAddress(host, port, InsecureChannelCredentials.create())
        .maxInboundMessageSize(MAX_MESSAGE_BYTES)
        .build();
  }

  private void unavailable(String address, StatusRuntimeException e) {
    synchronized (this) {
      suspectUntil.put(address, System.nanoTime() + SUSPECT_FOR_NANOS);
    }
    failovers++;
    notices.accept("provider " + address + " unavailable (" + why(e) + "); trying another");
  }

  /** The status's description, and its cause's (e.g. "Connection refused") when it has one. */
  private static String why(StatusRuntimeException e) {
    String description = e.getStatus().getDescription();
    Throwable cause = e.getStatus().getCause();
    if (cause != null && cause.getMessage() != null) {
      description = (description == null ? "" : description + ": ") + cause.getMessage();
    }
    return description == null ? "no details" : description;
  }

  private StatusRuntimeException noProvider(
      String method, StatusRuntimeException last, boolean triedAny) {
    if (last != null) {
      return Status.UNAVAILABLE
          .withDescription("no TaskService provider answered " + method + " in time: " + why(last))
          .asRuntimeException();
    }
    if (triedAny) {
      return Status.DEADLINE_EXCEEDED
          .withDescription(method + " found no provider to try before its deadline")
          .asRuntimeException();
    }
    return Status.UNAVAILABLE
        .withDescription("no TaskService provider registered under "
            + directory.description() + ProviderDirectory.TASK_SERVICE)
        .asRuntimeException();
  }

  private static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw Status.CANCELLED.withDescription("interrupted").asRuntimeException();
    }
  }

  @Override
  public synchronized void close() {
    for (ManagedChannel channel : channels.values()) {
      channel.shutdownNow();
    }
    channels.clear();
  }
}
