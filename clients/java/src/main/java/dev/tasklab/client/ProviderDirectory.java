package dev.tasklab.client;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;

/**
 * The TaskService providers registered in ZooKeeper, kept current by a watch.
 *
 * <p>Each provider (common/rpc/server.py) holds an ephemeral node {@code
 * /services/TaskService/{host:port}}: the node's name is the address to dial, so discovery
 * reads names only (the JSON data is for people and tools). The node lives as long as the
 * provider's ZooKeeper session, so a provider that dies disappears from this list when its
 * session expires, and one that starts appears, without restarting the client. This is the Java
 * twin of the ChildrenWatch in common/rpc/proxy.py.
 *
 * <p>A ZooKeeper watch fires once: each event re-reads the children and sets the next watch in
 * the same call, so no change between two reads is missed. The re-read runs on a thread of its
 * own, never on ZooKeeper's event thread, which must not block on a ZooKeeper call.
 */
public final class ProviderDirectory implements AutoCloseable {
  public static final String TASK_SERVICE = "/services/TaskService";

  private final CuratorFramework zk;
  private final String description;
  private final Consumer<String> notices;
  private final ExecutorService refresher =
      Executors.newSingleThreadExecutor(
          r -> {
            Thread t = new Thread(r, "provider-directory");
            t.setDaemon(true);
            return t;
          });
  private final Object lock = new Object();
  private final Watcher watcher = this::onEvent;
  private List<String> providers = List.of();
  private volatile boolean closed;

  /**
   * @param hosts ZooKeeper's connection string, {@code host:port[,host:port...]}
   * @param chroot the tasklab chroot ({@code zk_chroot}, e.g. {@code /tasklab}); "" for none
   * @param notices where a line about providers joining or leaving goes (stderr in the CLI)
   */
  public ProviderDirectory(String hosts, String chroot, Consumer<String> notices) {
    String root = chroot == null || chroot.isEmpty() || chroot.equals("/") ? "" : chroot;
    if (!root.isEmpty() && !root.startsWith("/")) {
      root = "/" + root;
    }
    this.description = hosts + root;
    this.notices = notices;
    // The chroot goes at the end of the connection string, as kazoo takes it: every path below
    // is then relative to it, exactly as the providers see theirs.
    this.zk =
        CuratorFrameworkFactory.builder()
            .connectString(hosts + root)
            .sessionTimeoutMs(10_000)
            .connectionTimeoutMs(5_000)
            .retryPolicy(new ExponentialBackoffRetry(100, 3))
            .build();
  }

  /** Connects and reads the providers once; false when ZooKeeper cannot be reached in time. */
  public boolean start(long timeoutMillis) throws InterruptedException {
    zk.getConnectionStateListenable().addListener(this::onStateChange);
    zk.start();
    if (!zk.blockUntilConnected((int) timeoutMillis, TimeUnit.MILLISECONDS)) {
      return false;
    }
    // On the refresher thread like every later read, so two reads never race to set the list.
    try {
      refresher.submit(this::refresh).get();
    } catch (ExecutionException e) {
      throw new IllegalStateException("cannot read " + TASK_SERVICE, e.getCause());
    }
    return true;
  }

  /** Where providers are looked up, for messages: {@code hosts/chroot}. */
  public String description() {
    return description;
  }

  /** The providers' addresses, in address order (the order round robin goes through them). */
  public List<String> providers() {
    synchronized (lock) {
      return providers;
    }
  }

  /**
   * The providers, waiting for one to register until {@code deadlineNanos} (System.nanoTime);
   * empty when none did.
   */
  public List<String> awaitProviders(long deadlineNanos) throws InterruptedException {
    synchronized (lock) {
      while (providers.isEmpty() && !closed) {
        long left = deadlineNanos - System.nanoTime();
        if (left <= 0) {
          break;
        }
        // Bounded wait: wakes on a change (notifyAll below) or at the deadline.
        TimeUnit.NANOSECONDS.timedWait(lock, Math.min(left, TimeUnit.MILLISECONDS.toNanos(500)));
      }
      return providers;
    }
  }

  private void onStateChange(CuratorFramework client, ConnectionState state) {
    // After a new session (the old one expired while disconnected) the watch is gone with it:
    // read again, which sets a new one.
    if (state == ConnectionState.RECONNECTED) {
      scheduleRefresh();
    }
  }

  private void onEvent(WatchedEvent event) {
    if (event.getType() != Watcher.Event.EventType.None) {
      scheduleRefresh();
    }
  }

  private void scheduleRefresh() {
    try {
      refresher.execute(this::refresh);
    } catch (RejectedExecutionException closing) {
      // close() ran: nothing to keep current any more.
    }
  }

  private void refresh() {
    if (closed) {
      return;
    }
    List<String> children;
    try {
      children = new ArrayList<>(zk.getChildren().usingWatcher(watcher).forPath(TASK_SERVICE));
    } catch (KeeperException.NoNodeException notYet) {
      // No provider has ever registered under this chroot (or the node was deleted by hand).
      // This client only reads: rather than create the node, it waits for it to appear.
      children = new ArrayList<>();
      watchForCreation();
    } catch (Exception e) {
      // Connection trouble: the RECONNECTED listener reads again once there is a session.
      notices.accept("cannot read " + TASK_SERVICE + " (" + e.getMessage() + ")");
      return;
    }
    Collections.sort(children);
    List<String> before;
    synchronized (lock) {
      before = providers;
      providers = List.copyOf(children);
      lock.notifyAll();
    }
    List<String> joined = new ArrayList<>(children);
    joined.removeAll(before);
    List<String> left = new ArrayList<>(before);
    left.removeAll(children);
    // The first read is not news; later changes are (a provider that died shows up here).
    if (!before.isEmpty() && !joined.isEmpty()) {
      notices.accept("TaskService providers joined: " + String.join(", ", joined));
    }
    if (!left.isEmpty()) {
      notices.accept("TaskService providers left: " + String.join(", ", left));
    }
  }

  private void watchForCreation() {
    try {
      if (zk.checkExists().usingWatcher(watcher).forPath(TASK_SERVICE) != null) {
        scheduleRefresh(); // created between the two reads
      }
    } catch (Exception e) {
      notices.accept("cannot watch " + TASK_SERVICE + " (" + e.getMessage() + ")");
    }
  }

  @Override
  public void close() {
    closed = true;
    synchronized (lock) {
      lock.notifyAll();
    }
    refresher.shutdownNow();
    zk.close();
  }
}
