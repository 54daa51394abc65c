"""Graph architectures: both building forms, merge layers, several inputs/outputs, nesting, configs, validation."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_harness import run_layer_test

import funcdl as fd
from funcdl import nn
from funcdl.errors import ConfigError, ShapeError


def residual_graph():
    """conv-bn-relu plus a 1x1 projection, added, concatenated with the projection, pooled, dense."""
    x = nn.Input((6, 6, 2), name="image")
    y = nn.Conv2D(3, 3, padding=1, name="conv")(x)
    y = nn.ReLU(name="relu")(nn.BatchNorm(name="bn")(y))
    shortcut = nn.Conv2D(3, 1, name="proj")(x)
    y = nn.Add(name="add")([y, shortcut])
    y = nn.Concatenate(name="concat")([y, shortcut])
    return nn.Graph(inputs=x, outputs=nn.Dense(4, name="logits")(nn.GlobalAveragePooling2D(name="pool")(y)))


def two_in_two_out():
    """Inputs a (4,) and b (3,); outputs a tuple: (sum of two dense branches, a dense of b alone)."""
    a, b = nn.Input((4,), name="a"), nn.Input((3,), name="b")
    left, right = nn.Dense(5, name="left")(a), nn.Dense(5, name="right")(b)
    total = nn.Add(name="sum")([left, right])
    return nn.Graph(inputs=[a, b], outputs=(total, nn.Dense(2, name="aux")(b)))


def key(seed=0):
    return jax.random.key(seed)


# -- one harness for merge layers, global pooling and graphs --------------------------------------------------
@pytest.mark.parametrize("layer, in_shape, out_shape", [
    (nn.Add(), ((2, 3, 4), (2, 3, 4)), (2, 3, 4)),
    (nn.Add(), ((2, 3), (2, 3), (2, 3)), (2, 3)),
    (nn.Add(), ((2, 4, 4, 3), (2, 1, 1, 3)), (2, 4, 4, 3)),  # a broadcast gate
    (nn.Subtract(), ((2, 5), (2, 5)), (2, 5)),
    (nn.Multiply(), ((2, 4, 4, 3), (2, 1, 1, 3)), (2, 4, 4, 3)),
    (nn.Average(), ((2, 5), (2, 5), (2, 5)), (2, 5)),
    (nn.Maximum(), ((2, 5), (2, 5)), (2, 5)),
    (nn.Minimum(), ((2, 5), (2, 5)), (2, 5)),
    (nn.Concatenate(), ((2, 3, 4), (2, 3, 5)), (2, 3, 9)),
    (nn.Concatenate(axis=1), ((2, 3, 4), (2, 1, 4), (2, 2, 4)), (2, 6, 4)),
    (nn.GlobalAveragePooling2D(), (2, 5, 4, 3), (2, 3)),
    (nn.GlobalMaxPooling2D(keepdims=True), (2, 5, 4, 3), (2, 1, 1, 3)),
    (nn.GlobalAveragePooling1D(), (2, 7, 3), (2, 3)),
    (nn.GlobalMaxPooling1D(), (2, 7, 3), (2, 3)),
    (residual_graph(), (2, 6, 6, 2), (2, 4)),
    (two_in_two_out(), ((3, 4), (3, 3)), ((3, 5), (3, 2))),
    (nn.Sequential([residual_graph(), nn.Dense(2)]), (2, 6, 6, 2), (2, 2)),
])
def test_layer_harness(layer, in_shape, out_shape):
    run_layer_test(layer, in_shape, out_shape)


def test_residual_graph_in_training_mode():
    run_layer_test(residual_graph(), (4, 6, 6, 2), (4, 4), train=True)


def test_merge_values():
    a, b, c = jnp.array([[1.0, -2.0]]), jnp.array([[3.0, 5.0]]), jnp.array([[0.5, 0.5]])
    run = {layer: layer.apply({}, (a, b)) for layer in (nn.Add(), nn.Subtract(), nn.Multiply(), nn.Average(),
                                                         nn.Maximum(), nn.Minimum())}
    np.testing.assert_array_equal(run[nn.Add()], [[4.0, 3.0]])
    np.testing.assert_array_equal(run[nn.Subtract()], [[-2.0, -7.0]])
    np.testing.assert_array_equal(run[nn.Multiply()], [[3.0, -10.0]])
    np.testing.assert_array_equal(run[nn.Average()], [[2.0, 1.5]])
    np.testing.assert_array_equal(run[nn.Maximum()], [[3.0, 5.0]])
    np.testing.assert_array_equal(run[nn.Minimum()], [[1.0, -2.0]])
    np.testing.assert_array_equal(nn.Add().apply({}, [a, b, c]), [[4.5, 3.5]])
    np.testing.assert_array_equal(nn.Concatenate().apply({}, (a, b)), [[1.0, -2.0, 3.0, 5.0]])
    x = jnp.arange(24.0).reshape(1, 2, 4, 3)
    np.testing.assert_allclose(nn.GlobalAveragePooling2D().apply({}, x), x.mean((1, 2)))
    np.testing.assert_array_equal(nn.GlobalMaxPooling2D().apply({}, x), [[21.0, 22.0, 23.0]])


@pytest.mark.parametrize("layer, shapes, message", [
    (nn.Add(), [(2, 3), (2, 4)], r"layer merge \(Add\) cannot combine inputs of shapes \(2, 3\), \(2, 4\)"),
    (nn.Subtract(), [(2, 3)] * 3, r"layer merge \(Subtract\) takes exactly 2 inputs, got 3"),
    (nn.Add(), [(2, 3)], r"layer merge \(Add\) merges several inputs; give it a tuple of arrays"),
    (nn.Concatenate(), [(2, 3, 4), (2, 2, 4)], r"merge \(Concatenate\) cannot join inputs of shapes .* along axis -1"),
    (nn.Concatenate(axis=0), [(2, 3), (2, 3)], r"along axis 0"),
])
def test_merge_shape_errors_name_the_node(layer, shapes, message):
    names = [f"x{index}" for index in range(len(shapes))]
    graph = nn.Graph(inputs=[nn.Input(name=name) for name in names], nodes=[nn.Node("merge", layer, names)],
                     outputs="merge")
    xs = tuple(jnp.ones(shape) for shape in shapes)
    with pytest.raises(ShapeError, match=message):
        graph.init(key(), xs if len(xs) > 1 else xs[0])


# -- building: the symbolic form and the node list are the same graph ----------------------------------------
def test_symbolic_and_node_list_forms_build_the_same_graph():
    listed = nn.Graph(
        inputs=[nn.Input((6, 6, 2), name="image")],
        nodes=[nn.Node("conv", nn.Conv2D(3, 3, padding=1), ["image"]), nn.Node("bn", nn.BatchNorm(), ["conv"]),
               nn.Node("relu", nn.relu, ["bn"]), nn.Node("proj", nn.Conv2D(3, 1), ["image"]),
               nn.Node("add", nn.Add(), ["relu", "proj"]), nn.Node("concat", nn.Concatenate(), ["add", "proj"]),
               nn.Node("pool", nn.GlobalAveragePooling2D(), ["concat"]), nn.Node("logits", nn.Dense(4), ["pool"])],
        outputs="logits")
    assert listed == residual_graph()
    assert nn.to_config(listed) == nn.to_config(residual_graph())


def test_params_are_named_by_node():
    variables = residual_graph().init(key(), jnp.ones((1, 6, 6, 2)))
    shapes = jax.tree.map(lambda a: a.shape, variables)
    assert shapes == {"params": {"conv": {"kernel": (3, 3, 2, 3), "bias": (3,)}, "bn": {"scale": (3,), "bias": (3,)},
                                 "proj": {"kernel": (1, 1, 2, 3), "bias": (3,)},
                                 "logits": {"kernel": (6, 4), "bias": (4,)}},
                      "batch_stats": {"bn": {"mean": (3,), "var": (3,)}}}


def test_unnamed_layers_get_class_names_in_call_order():
    x = nn.Input((4,))
    y = nn.Dense(3)(nn.Dense(3, name="dense_1")(nn.Dense(3)(x)))
    graph = nn.Graph(inputs=x, outputs=nn.ReLU()(y))
    assert [(node.name, node.inputs) for node in graph.nodes] == [
        ("dense", ("input",)), ("dense_1", ("dense",)), ("dense_2", ("dense_1",)), ("relu", ("dense_2",))]


def test_node_list_in_any_order_is_sorted_stably():
    nodes = [nn.Node("out", nn.Add(), ["b", "a"]), nn.Node("a", nn.Dense(2), ["x"]), nn.Node("b", nn.Dense(2), ["x"])]
    graph = nn.Graph(inputs=[nn.Input((3,), name="x")], nodes=nodes, outputs="out")
    assert [node.name for node in graph.nodes] == ["a", "b", "out"]
    in_order = nn.Graph(inputs=[nn.Input((3,), name="x")], nodes=[nodes[2], nodes[1], nodes[0]], outputs="out")
    assert [node.name for node in in_order.nodes] == ["b", "a", "out"]  # already an order: kept


def test_branches_share_nothing():
    x = nn.Input((3,), name="x")
    graph = nn.Graph(inputs=x, outputs=nn.Add()([nn.Dense(4, name="left")(x), nn.Dense(4, name="right")(x)]))
    params = graph.init(key(), jnp.ones((1, 3)))["params"]
    assert set(params) == {"left", "right"}
    assert not np.allclose(params["left"]["kernel"], params["right"]["kernel"])
    x1 = jnp.arange(6.0).reshape(2, 3)
    expected = (x1 @ params["left"]["kernel"] + params["left"]["bias"]
                + x1 @ params["right"]["kernel"] + params["right"]["bias"])
    np.testing.assert_allclose(graph.apply({"params": params}, x1), expected, rtol=1e-6)
    grads = jax.grad(lambda p: graph.apply({"params": p}, x1).sum())(params)
    np.testing.assert_allclose(grads["left"]["kernel"], grads["right"]["kernel"])  # same input, own weights


# -- several inputs and outputs --------------------------------------------------------------------------------
def test_several_inputs_as_tuple_or_dict_and_outputs_as_tuple_or_dict():
    graph = two_in_two_out()
    a, b = jnp.ones((2, 4)), jnp.arange(6.0).reshape(2, 3)
    variables = graph.init(key(), (a, b))
    as_tuple = graph.apply(variables, (a, b))
    as_dict = graph.apply(variables, {"b": b, "a": a})
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    jax.tree.map(np.testing.assert_array_equal, as_tuple, as_dict)
    p = variables["params"]
    np.testing.assert_allclose(as_tuple[1], b @ p["aux"]["kernel"] + p["aux"]["bias"], rtol=1e-6)
    named = nn.Graph(inputs=graph.inputs, nodes=graph.nodes, outputs={"main": "sum", "aux": "aux"})
    out = named.apply(variables, (a, b))
    assert set(out) == {"main", "aux"}
    np.testing.assert_array_equal(out["aux"], as_tuple[1])
    assert nn.output_shape(named) == {"main": (5,), "aux": (2,)}  # declared input shapes suffice
    assert nn.node_shapes(graph) == {"a": (4,), "b": (3,), "left": (5,), "right": (5,), "sum": (5,), "aux": (2,)}


def test_inputs_are_checked_against_their_declarations():
    graph = two_in_two_out()
    variables = graph.init(key(), (jnp.ones((1, 4)), jnp.ones((1, 3))))
    with pytest.raises(ShapeError, match=r"takes 2 inputs \(a, b\): pass a tuple in that order or a dict"):
        graph.apply(variables, jnp.ones((1, 4)))
    with pytest.raises(ShapeError, match=r"graph input 'b' takes examples of shape \(3,\), got \(5,\)"):
        graph.apply(variables, (jnp.ones((1, 4)), jnp.ones((1, 5))))
    with pytest.raises(ShapeError, match=r"takes inputs \['a', 'b'\]; got a dict of \['a', 'c'\]"):
        graph.apply(variables, {"a": jnp.ones((1, 4)), "c": jnp.ones((1, 3))})
    free = nn.Graph(inputs=[nn.Input((None, 3), name="seq")], nodes=[nn.Node("pool", nn.GlobalMaxPooling1D(),
                                                                              ["seq"])], outputs="pool")
    assert free.apply({}, jnp.ones((2, 7, 3))).shape == (2, 3)  # None: any length


# -- nesting -------------------------------------------------------------------------------------------------
def test_nested_models_keep_their_names_inside_their_node():
    inner = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(3)])
    x = nn.Input((5,), name="x")
    encoder = two_in_two_out()
    h = inner(x)
    main, aux = encoder([nn.Dense(4, name="to_a")(x), h])
    graph = nn.Graph(inputs=x, outputs={"main": main, "aux": aux})
    variables = graph.init(key(), jnp.ones((2, 5)))
    shapes = jax.tree.map(lambda a: a.shape, variables["params"])
    assert shapes["sequential"] == {"layers_0": {"kernel": (5, 4), "bias": (4,)},
                                    "layers_2": {"kernel": (4, 3), "bias": (3,)}}
    assert set(shapes["graph"]) == {"left", "right", "aux"}
    assert graph.node("graph").inputs == ("to_a", "sequential")
    assert graph.outputs == {"main": "graph:0", "aux": "graph:1"}
    out = graph.apply(variables, jnp.ones((2, 5)))
    direct = encoder.apply({"params": variables["params"]["graph"]},
                           (nn.Dense(4).apply({"params": variables["params"]["to_a"]}, jnp.ones((2, 5))),
                            inner.apply({"params": variables["params"]["sequential"]}, jnp.ones((2, 5)))))
    np.testing.assert_allclose(out["aux"], direct[1], rtol=1e-6)
    np.testing.assert_allclose(out["main"], direct[0], rtol=1e-6)
    assert nn.from_config(json.loads(json.dumps(nn.to_config(graph)))) == graph


def test_selecting_an_output_of_a_single_output_node_is_a_shape_error():
    graph = nn.Graph(inputs=[nn.Input((3,), name="x")], nodes=[nn.Node("d", nn.Dense(2), ["x"]),
                                                               nn.Node("e", nn.Dense(2), ["d:1"])], outputs="e")
    with pytest.raises(ShapeError, match=r"reference 'd:1' selects output 1 of 'd', which gives one array"):
        graph.init(key(), jnp.ones((1, 3)))


def test_as_graph_of_a_sequential_has_the_same_params_and_outputs():
    model = fd.models.cnn()
    graph = nn.as_graph(model)
    assert [node.name for node in graph.nodes][:3] == ["layers_0", "layers_1", "layers_2"]
    x = jax.random.normal(key(3), (2, 28, 28, 1))
    variables = model.init(key(), x)
    assert jax.tree.map(jnp.shape, graph.init(key(), x)) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_array_equal(graph.apply(variables, x), model.apply(variables, x))
    assert list(nn.node_shapes(model, (28, 28, 1))) == ["input"] + [node.name for node in graph.nodes]


# -- configs ---------------------------------------------------------------------------------------------------
def test_config_json_shape_and_round_trip():
    graph = two_in_two_out()
    config = json.loads(json.dumps(nn.to_config(graph)))
    assert config["type"] == "Graph"
    assert config["inputs"] == [{"name": "a", "shape": [4], "dtype": "float32"},
                                {"name": "b", "shape": [3], "dtype": "float32"}]
    assert config["nodes"][2] == {"name": "sum", "layer": {"type": "Add"}, "inputs": ["left", "right"]}
    assert config["outputs"] == ["sum", "aux"]
    rebuilt = nn.from_config(config)
    assert rebuilt == graph
    xs = (jnp.ones((2, 4)), jnp.ones((2, 3)))
    variables = graph.init(key(), xs)
    jax.tree.map(np.testing.assert_array_equal, rebuilt.apply(variables, xs), graph.apply(variables, xs))


def _graph_config(nodes, outputs="b", inputs=None):
    inputs = [{"name": "x", "shape": [3], "dtype": "float32"}] if inputs is None else inputs
    return {"type": "Graph", "inputs": inputs,
            "nodes": [{"name": name, "layer": {"type": "Dense", "features": 2} if kind == "dense" else {"type": kind},
                       "inputs": refs} for name, kind, refs in nodes], "outputs": outputs}


def _nested(depth):
    config = {"type": "Dense", "features": 2}
    for _ in range(depth):
        config = {"type": "Graph", "inputs": [{"name": "x", "shape": None, "dtype": "float32"}],
                  "nodes": [{"name": "inner", "layer": config, "inputs": ["x"]}], "outputs": "inner"}
    return config


@pytest.mark.parametrize("config, message", [
    (_graph_config([("a", "dense", ["b"]), ("b", "dense", ["a"])]),
     r"the graph has a cycle: b -> a -> b; a graph must be acyclic"),
    (_graph_config([("b", "dense", ["b"])]), r"the graph has a cycle: b -> b"),
    (_graph_config([("a", "dense", ["x"]), ("b", "Add", ["a", "c"]), ("c", "dense", ["b"])]),
     r"cycle: c -> b -> c"),
    (_graph_config([("a", "dense", ["x"]), ("b", "dense", ["nowhere"])]),
     r"node 'b' takes input 'nowhere', which is no input or node of the graph"),
    (_graph_config([("b", "dense", ["x"]), ("b", "dense", ["x"])]), r"duplicate name 'b'"),
    (_graph_config([("x", "dense", ["x"])], outputs="x"), r"duplicate name 'x'"),
    (_graph_config([("a", "dense", ["x"]), ("b", "dense", ["x"])]), r"node 'a' \(Dense\) is never used"),
    (_graph_config([("b", "dense", ["x"])], outputs="c"), r"output 'c' is no input or node of the graph"),
    (_graph_config([("b", "dense", ["x"])], outputs=[]), r"needs 1 to 10000 outputs"),
    (_graph_config([("b", "dense", ["x"])], outputs=5), r"outputs must be a name, a list of names or a dict"),
    (_graph_config([("b", "dense", [])]), r"node 'b' needs a list of 1 to 10000 input names"),
    (_graph_config([("b/c", "dense", ["x"])], outputs="b/c"), r"node name 'b/c' is invalid"),
    (_graph_config([("params", "dense", ["x"])], outputs="params"), r"node name 'params' is reserved"),
    (_graph_config([("b", "dense", ["x:"])]), r"output selector of 'x': name '' is invalid"),
    (_graph_config([("b", "Conv3D", ["x"])]), r"node 'b': unknown layer 'Conv3D'"),
    (_graph_config([("b", "dense", ["x"])], inputs=[{"name": "x", "shape": [-3]}]), r"Input shape must be"),
    (_graph_config([("b", "dense", ["x"])], inputs=[{"name": "x", "dtype": "complex64"}]), r"Input dtype must be"),
    (_graph_config([("b", "dense", ["x"])], inputs=[{"name": "x", "code": "1"}]), r"a graph input must be"),
    (_graph_config([("b", "dense", ["x"])], inputs=[]), r"a graph needs 1 to 10000 inputs"),
    ({**_graph_config([("b", "dense", ["x"])]), "nodes": {"b": 1}}, r"inputs and nodes must be lists"),
    ({**_graph_config([("b", "dense", ["x"])]), "nodes": [{"name": "b", "layer": {"type": "Dense", "features": 2},
                                                             "inputs": ["x"], "run": "x"}]}, r"a graph node must be"),
    ({**_graph_config([]), "nodes": [{}] * 100_001}, r"at most 100000 nodes"),
    (_nested(40), r"nests layers more than 32 deep"),
    ({"type": "Dense", "features": functools.reduce(lambda inner, _: [inner], range(5000), [])},
     r"nested too deeply"),
])
def test_hostile_configs_are_one_line_config_errors(config, message):
    with pytest.raises(ConfigError, match=message) as caught:
        nn.from_config(config)
    assert "\n" not in str(caught.value)


def test_nesting_within_the_limit_loads():
    graph = nn.from_config(_nested(31))
    assert graph.apply(graph.init(key(), jnp.ones((1, 3))), jnp.ones((1, 3))).shape == (1, 2)


def test_symbolic_building_errors():
    x = nn.Input((3,), name="x")
    dense = nn.Dense(2)
    with pytest.raises(ConfigError, match="the same Dense layer object is called twice"):
        nn.Graph(inputs=x, outputs=nn.Add()([dense(x), dense(x)]))
    other = nn.Input((3,), name="other")
    with pytest.raises(ConfigError, match=r"depend on an Input \(other, shape \(3,\)\) that is not among"):
        nn.Graph(inputs=x, outputs=nn.Add()([nn.Dense(2)(x), nn.Dense(2)(other)]))
    with pytest.raises(ConfigError, match="duplicate name 'x'"):
        nn.Graph(inputs=x, outputs=nn.Dense(2, name="x")(x))
    with pytest.raises(ConfigError, match="takes only its input"):
        nn.Dropout(0.5)(x, train=True)
    with pytest.raises(ConfigError, match="Graph outputs must be what layers returned"):
        nn.Graph(inputs=x, outputs=[nn.Dense(2)(x), jnp.ones(3)])
    for arithmetic in (lambda y: y + x, lambda y: 2 * y, lambda y: -y, np.asarray):
        with pytest.raises(ConfigError, match=r"holds no values: call funcdl layers on it, e.g. nn.ReLU\(\)\(x\)"):
            arithmetic(nn.Dense(3)(x))


# -- shape inference and summary -----------------------------------------------------------------------------
def test_shape_inference_of_several_inputs_and_outputs():
    graph = two_in_two_out()
    assert nn.output_shape(graph, ((4,), (3,))) == ((5,), (2,))
    assert nn.output_shape(graph, {"a": (4,), "b": (3,)}) == ((5,), (2,))
    assert nn.layer_shapes(graph)[0] == ((4,), (3,))
    assert nn.variable_shapes(nn.init_shapes(graph))["params/aux/kernel"] == (3, 2)
    with pytest.raises(ShapeError, match=r"the model takes inputs \['a', 'b'\]: give one shape per input"):
        nn.output_shape(graph, (4,))


def test_summary_of_a_graph():
    lines = []
    table = fd.summary(residual_graph(), print_fn=lines.append)
    assert lines == [table.text] and str(table) == table.text
    rows = {row["name"]: row for row in table.rows}
    assert list(rows) == ["image", "conv", "bn", "relu", "proj", "add", "concat", "pool", "logits"]
    assert rows["add"]["connected_to"] == ["relu", "proj"] and rows["add"]["output_shape"] == (6, 6, 3)
    assert rows["bn"]["params"] == 12 and rows["bn"]["trainable"] == 6  # scale, bias + mean, var
    assert (table.total_params, table.trainable_params, table.non_trainable_params) == (106, 100, 6)
    text = table.text.splitlines()
    assert text[0] == "Model: Graph" and text[1].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#",
                                                            "Connected", "to"]
    assert "add (Add)" in table.text and "(None, 6, 6, 3)" in table.text and "relu, proj" in table.text
    assert text[-3:] == ["Total params: 106 (424 B)", "Trainable params: 100 (400 B)",
                         "Non-trainable params: 6 (24 B)"]
    several = fd.summary(two_in_two_out(), print_fn=None)
    assert [row["type"] for row in several.rows[:2]] == ["Input", "Input"]
