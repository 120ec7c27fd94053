package dev.flowlogd.opensearch;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.Version;
import org.opensearch.action.admin.cluster.health.ClusterHealthResponse;
import org.opensearch.common.Priority;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.unit.TimeValue;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * Runs one real single-node OpenSearch in this JVM for flowlogd's tests, quickstart and
 * benchmarks, from the Maven Central jars alone.
 *
 * <p>Prints exactly one line on stdout once the cluster is yellow or green, for the
 * scripts and the Rust test harness to parse:
 * {@code {"url":"http://127.0.0.1:PORT","version":"2.19.6","pid":N}}. Everything else goes
 * to stderr. Exits cleanly (the node is closed, so its data is flushed) on SIGTERM/SIGINT,
 * and also when stdin reaches end of file unless {@code --no-stdin-watch} is given: a test
 * process that dies without cleaning up closes the pipe, and the node follows it.
 *
 * <p>Arguments: {@code --home DIR} (required; path.home, data under DIR/data),
 * {@code --port N} (HTTP port, 0 or absent: any free one), {@code --no-stdin-watch},
 * {@code --ephemeral} (delete DIR once the node is closed: a test node whose owner may never
 * get to clean up after it).
 */
public final class TestNode {

    /**
     * The plugins a stock distribution loads from its modules/ folder, handed over as
     * classpath plugins instead: a modules/ or plugins/ folder on disk would be scanned and
     * trip the jar-hell check against this classpath.
     */
    private static final List<Class<? extends Plugin>> PLUGINS = List.of(
        Netty4Plugin.class, // the HTTP layer
        ReindexPlugin.class, // _delete_by_query, _reindex, _update_by_query
        CommonAnalysisPlugin.class,
        MapperExtrasPlugin.class);

    /** Node's constructor taking classpath plugins is protected; this is the way in. */
    private static final class EmbeddedNode extends Node {
        EmbeddedNode(Settings settings, Collection<Class<? extends Plugin>> plugins) {
            super(
                InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> "flowlogd-test"),
                plugins,
                true);
        }
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        int port = 0;
        boolean watchStdin = true;
        boolean ephemeral = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--home" -> home = Path.of(requireValue(args, ++i, "--home"));
                case "--port" -> port = Integer.parseInt(requireValue(args, ++i, "--port"));
                case "--no-stdin-watch" -> watchStdin = false;
                case "--ephemeral" -> ephemeral = true;
                default -> fail("unknown argument " + args[i]
                    + " (usage: --home DIR [--port N] [--no-stdin-watch] [--ephemeral])");
            }
        }
        if (home == null) {
            fail("--home DIR is required");
        }
        home = home.toAbsolutePath();
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));

        Settings settings = Settings.builder()
            .put("cluster.name", "flowlogd-test")
            .put("node.name", "flowlogd-test")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            // A free port when none is given: the bound one is read back below.
            .put("http.port", port == 0 ? "0" : Integer.toString(port))
            .put("transport.port", "0")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // Test machines often have little free disk; the default watermarks would mark
            // indices read-only, which is not what the tests are about.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // One node: replicas could never be assigned and would keep every index yellow.
            .put("cluster.default_number_of_replicas", 0)
            .put("action.auto_create_index", true)
            .build();

        long started = System.nanoTime();
        Node node = new EmbeddedNode(settings, new ArrayList<>(PLUGINS));
        CountDownLatch stopped = new CountDownLatch(1);
        Path homeDir = home;
        boolean deleteHome = ephemeral;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                System.err.println("flowlogd-opensearch: error while closing the node: " + e);
            }
            if (deleteHome) {
                deleteTree(homeDir);
            }
            stopped.countDown();
        }, "flowlogd-opensearch-shutdown"));

        node.start();
        // Yellow alone can be reported before the indices of an existing data folder are
        // recovered (a restart): searches would then fail with 503 "all shards failed". Wait
        // until the cluster state has settled and no shard is still initializing.
        ClusterHealthResponse health = node.client().admin().cluster().prepareHealth()
            .setWaitForYellowStatus()
            .setWaitForEvents(Priority.LANGUID)
            .setWaitForNoInitializingShards(true)
            .setTimeout(TimeValue.timeValueSeconds(120))
            .get();
        if (health.isTimedOut()) {
            fail("cluster did not turn yellow within 120 s (status " + health.getStatus() + ")");
        }
        TransportAddress bound = node.injector().getInstance(HttpServerTransport.class)
            .boundAddress().publishAddress();
        InetSocketAddress address = bound.address();
        long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        System.err.printf("flowlogd-opensearch: node started in %d ms, cluster %s%n",
            millis, health.getStatus());
        System.out.printf("{\"url\":\"http://%s:%d\",\"version\":\"%s\",\"pid\":%d}%n",
            address.getHostString(), address.getPort(), Version.CURRENT, ProcessHandle.current().pid());
        System.out.flush();

        if (watchStdin) {
            Thread watcher = new Thread(() -> {
                try (InputStream in = System.in) {
                    byte[] buf = new byte[256];
                    while (in.read(buf) >= 0) {
                        // Input is ignored; only its end matters.
                    }
                } catch (IOException e) {
                    // A broken pipe means the same as end of file.
                }
                System.err.println("flowlogd-opensearch: stdin closed, stopping");
                System.exit(0);
            }, "flowlogd-opensearch-stdin");
            watcher.setDaemon(true);
            watcher.start();
        }
        // The node's own threads keep the JVM alive; wait for the shutdown hook.
        stopped.await();
    }

    /** Best effort: what cannot be deleted is left for the OS's temporary-file cleanup. */
    private static void deleteTree(Path root) {
        try (var paths = Files.walk(root)) {
            paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            System.err.println("flowlogd-opensearch: cannot delete " + root + ": " + e);
        }
    }

    private static String requireValue(String[] args, int i, String flag) {
        if (i >= args.length) {
            fail(flag + " needs a value");
        }
        return args[i];
    }

    private static void fail(String message) {
        System.err.println("flowlogd-opensearch: " + message);
        System.exit(2);
    }
}
