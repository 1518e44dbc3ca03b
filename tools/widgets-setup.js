// Loaded after require.js and before the Jupyter widgets manager on pages with saved widgets (see
// _config.yml, nb_ipywidgets_js); tools/vendor_assets.py copies it into _vendor/.
(function () {
  // 1. Map the manager's AMD modules to the copy the book serves itself, so that the manager and
  //    its fonts load from this site, at any page depth, and never from a CDN.
  var dist = new URL("html-manager/dist/", document.currentScript.src).href;
  var paths = {"@jupyter-widgets/html-manager/dist": dist.slice(0, -1)};
  ["base", "controls", "base7", "controls7", "html-manager"].forEach(function (name) {
    paths["@jupyter-widgets/" + name] = dist + name;
  });
  require.config({paths: paths});

  // 2. The widgets typeset their labels with MathJax 2's `MathJax.Hub.Queue`; the book loads
  //    MathJax 3, which has no Hub.  Translate those calls into MathJax 3's typesetPromise, and
  //    hold the ones made before MathJax has started.
  var pending = [];
  function typeset(element) {
    var mj = window.MathJax;
    if (mj && mj.typesetPromise) {
      mj.typesetPromise(element ? [element] : undefined).catch(function (err) {
        console.warn("MathJax could not typeset a widget label", err);
      });
    } else {
      pending.push(element);
    }
  }
  var hub = {
    Queue: function () {
      Array.prototype.forEach.call(arguments, function (job) {
        if (Array.isArray(job) && job[0] === "Typeset") typeset(job[2]);
      });
    }
  };
  // 3. The images that the widgets' output areas draw (matplotlib figures) have no alt text;
  //    give them one, for readers who cannot see them.  Each chapter places a numbered, captioned
  //    static figure beside its widget.
  var ALT = "Figure drawn by the interactive widget for the settings of its controls";
  var SELECTOR = ".jupyter-widgets img:not([alt]), .jupyter-widgets img[alt='']";
  new MutationObserver(function () {
    document.querySelectorAll(SELECTOR).forEach(function (img) { img.setAttribute("alt", ALT); });
  }).observe(document.documentElement, {childList: true, subtree: true});

  var config = window.MathJax = window.MathJax || {};
  if (config.version) {  // MathJax 3 already running
    config.Hub = config.Hub || hub;
    return;
  }
  config.Hub = hub;  // used until MathJax 3 replaces this configuration object by itself
  config.startup = config.startup || {};
  var ready = config.startup.ready;
  config.startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = hub;
    window.MathJax.startup.promise.then(function () { pending.splice(0).forEach(typeset); });
  };
})();
